"""Syntax check of the generated Swift, for machines without a Swift toolchain (this Linux CI:
Debian has no `swiftlang` package, and swift.org's toolchain is a download of several hundred MB).

Parses bindings/generated/swift/tandem.swift with the tree-sitter Swift grammar and fails on any
syntax error. The grammar (tree-sitter-swift 0.7.4) lags the language in two places that uniffi's
output uses, so exactly these are accepted (blanked out before parsing):
  - the `@_documentation(visibility: private)` attribute (an underscored compiler attribute);
  - `nonisolated(unsafe)` on a static property (Swift 5.10);
  - a closure whose body is the empty tuple, `{ () }`.
This catches malformed output (a broken template, a bad identifier), not type errors: only
`swiftc` on macOS or a Swift toolchain does that (see bindings/README.md).
"""

import re
import sys

import tree_sitter_swift
from tree_sitter import Language, Parser

GRAMMAR_GAPS = [
    re.compile(r"@_documentation\(visibility: private\)"),
    re.compile(r"\bnonisolated\(unsafe\)\s"),
    re.compile(r"(?<=\{ )\(\)(?= \})"),
]


def syntax_errors(source):
    for gap in GRAMMAR_GAPS:
        source = gap.sub(lambda m: " " * len(m.group(0)), source)
    tree = Parser(Language(tree_sitter_swift.language())).parse(source.encode())
    found = []

    def walk(node):
        if node.type == "ERROR" or node.is_missing:
            found.append(node)
            return
        for child in node.children:
            if child.has_error:
                walk(child)

    if tree.root_node.has_error:
        walk(tree.root_node)
    return [(n.start_point[0] + 1, n.start_point[1] + 1, n.text.decode()[:80]) for n in found]


def main(paths):
    # The checker must itself reject broken Swift, or a passing run means nothing.
    assert syntax_errors("public func f( -> { let x = }"), "the Swift grammar accepts garbage"
    failed = False
    for path in paths:
        with open(path, encoding="utf-8") as f:
            errors = syntax_errors(f.read())
        for line, column, text in errors:
            print(f"{path}:{line}:{column}: syntax error near {text!r}")
        failed |= bool(errors)
        print(f"swift syntax: {path}: {'FAILED' if errors else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
