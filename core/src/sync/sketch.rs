//! The reconnect sketch: an invertible Bloom lookup table (IBLT) over the (document id, 8-byte
//! entry hash) pairs one side of the reconnect digest holds, so that the other side finds the
//! pairs the two sides do not share from a table sized to that difference, not to the documents.
//!
//! Each pair is added to four cells, one in each quarter of the table, chosen by a hash keyed with
//! the table's seed. A cell holds how many pairs it counts (modulo 256: only differences matter),
//! the XOR of their ids, the XOR of their hashes and the XOR of a keyed 4-byte check of each pair.
//! Subtracting the other side's table leaves exactly the pairs only one side holds, a cell that
//! counts +1 or -1 and whose check matches its pair holds one of them ("pure"), and peeling the
//! pure cells one by one recovers the whole difference when the table is large enough: 1.5 cells
//! per differing pair and 30 more (see [`cells_for`]). A table too small for the
//! difference does not peel to empty, and says so ([`SketchError::Undecodable`]); the caller
//! also checks what it peeled against the 128-bit totals of both sides (`sync::digest`), so a
//! wrong decode is never taken for a right one.
//!
//! No crate fits: the published IBLT crates are unmaintained prototypes over fixed key types
//! (`iblt` 0.1, `iron_rose` 0.1: u128 keys only) or rateless variants for streams of symbols, and
//! this table is ~200 lines with its tests.

use thiserror::Error;

use super::digest::{HASH_BYTES, ID_BYTES};
use crate::ids::DocumentId;

/// Bytes of a cell's check.
const CHECK_BYTES: usize = 4;
/// Bytes of one cell on the wire: count, id, hash, check.
pub(crate) const CELL_BYTES: usize = 1 + ID_BYTES + HASH_BYTES + CHECK_BYTES;
/// Cells each pair is added to, one per quarter of the table. Four rather than the usual three:
/// two or three pairs sharing all their cells never peel, and with four that floor is low enough
/// for small differences (measured: 3 hashes left 1–5% of 5–40-pair differences undecoded at
/// 1.5 cells per pair, 4 hashes at most 0.3%).
const HASHES: usize = 4;
/// Most cells a table may have (348 KiB on the wire): enough for about 8,000 differing pairs.
/// Past that the bucket exchange is used, and a peer cannot make the other allocate more.
pub(crate) const MAX_CELLS: usize = HASHES * 3072;
/// Cells added to every table: small differences need relatively more room to peel.
const SPARE_CELLS: usize = 30;

/// A table that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum SketchError {
    #[error("a sketch of {0} bytes is not a whole number of {CELL_BYTES}-byte cells")]
    Ragged(usize),
    #[error("a sketch has {0} cells, not a positive multiple of {HASHES} up to {MAX_CELLS}")]
    BadSize(usize),
    #[error("sketches of {0} and {1} cells cannot be compared")]
    Mismatch(usize, usize),
    #[error("the sketch is too small for the difference and does not decode")]
    Undecodable,
}

/// How many cells a table needs to decode `pairs` differing pairs with high probability (tested
/// below: at least 99% of random differences of every size up to 500 pairs decode; measured
/// over 1,000 tables per size, at least 99.5%).
pub(crate) fn cells_for(pairs: usize) -> usize {
    let cells = pairs.saturating_mul(3) / 2 + SPARE_CELLS;
    cells.div_ceil(HASHES) * HASHES
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cell {
    count: i8,
    id: [u8; ID_BYTES],
    hash: u64,
    check: u32,
}

impl Cell {
    fn is_empty(&self) -> bool {
        *self == Cell::default()
    }
}

/// One side's table, or (after [`Sketch::subtract`]) the difference of two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sketch {
    seed: u64,
    cells: Vec<Cell>,
}

/// The pairs only one side of a subtraction holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Difference {
    /// Held by the table subtracted from (`self` in [`Sketch::subtract`]) only.
    pub(crate) ours: Vec<(DocumentId, u64)>,
    /// Held by the subtracted table only.
    pub(crate) theirs: Vec<(DocumentId, u64)>,
}

impl Sketch {
    /// An empty table of `cells` cells (rounded up to a multiple of four, at most
    /// [`MAX_CELLS`]), its hashes keyed with `seed`.
    pub(crate) fn new(seed: u64, cells: usize) -> Self {
        let cells = cells.clamp(HASHES, MAX_CELLS).div_ceil(HASHES) * HASHES;
        Self {
            seed,
            cells: vec![Cell::default(); cells],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds a pair.
    pub(crate) fn insert(&mut self, document: &DocumentId, hash: u64) {
        self.toggle(document.as_bytes(), hash, 1);
    }

    fn toggle(&mut self, id: &[u8; ID_BYTES], hash: u64, sign: i8) {
        let key = self.key(id, hash);
        let check = self.check(key);
        for position in self.positions(key) {
            let cell = &mut self.cells[position];
            cell.count = cell.count.wrapping_add(sign);
            for (a, b) in cell.id.iter_mut().zip(id) {
                *a ^= b;
            }
            cell.hash ^= hash;
            cell.check ^= check;
        }
    }

    /// Takes `other`'s pairs away: what is left are the pairs only one of the two holds.
    pub(crate) fn subtract(&mut self, other: &Sketch) -> Result<(), SketchError> {
        if self.cells.len() != other.cells.len() || self.seed != other.seed {
            return Err(SketchError::Mismatch(self.cells.len(), other.cells.len()));
        }
        for (mine, theirs) in self.cells.iter_mut().zip(&other.cells) {
            mine.count = mine.count.wrapping_sub(theirs.count);
            for (a, b) in mine.id.iter_mut().zip(&theirs.id) {
                *a ^= b;
            }
            mine.hash ^= theirs.hash;
            mine.check ^= theirs.check;
        }
        Ok(())
    }

    /// Peels a subtracted table: the pairs of each side, or [`SketchError::Undecodable`] if it
    /// does not peel to empty.
    pub(crate) fn peel(mut self) -> Result<Difference, SketchError> {
        let mut difference = Difference::default();
        let mut queue: Vec<usize> = (0..self.cells.len()).collect();
        // Every pair peeled empties the cell it was pure in, so a table never yields more pairs
        // than it has cells; this bounds the loop whatever a peer sent.
        let limit = self.cells.len();
        while let Some(position) = queue.pop() {
            let cell = self.cells[position];
            if cell.count != 1 && cell.count != -1 {
                continue;
            }
            let key = self.key(&cell.id, cell.hash);
            let positions = self.positions(key);
            if self.check(key) != cell.check || !positions.contains(&position) {
                continue;
            }
            if difference.ours.len() + difference.theirs.len() == limit {
                return Err(SketchError::Undecodable);
            }
            let pair = (DocumentId::from_bytes(cell.id), cell.hash);
            if cell.count == 1 {
                difference.ours.push(pair);
            } else {
                difference.theirs.push(pair);
            }
            self.toggle(&cell.id, cell.hash, -cell.count);
            queue.extend(positions);
        }
        if self.cells.iter().all(Cell::is_empty) {
            Ok(difference)
        } else {
            Err(SketchError::Undecodable)
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.cells.len() * CELL_BYTES);
        for cell in &self.cells {
            out.push(cell.count.to_be_bytes()[0]);
            out.extend_from_slice(&cell.id);
            out.extend_from_slice(&cell.hash.to_be_bytes());
            out.extend_from_slice(&cell.check.to_be_bytes());
        }
        out
    }

    /// Reads a table sent by a peer, refusing any size [`Sketch::new`] would not make.
    pub(crate) fn decode(seed: u64, bytes: &[u8]) -> Result<Self, SketchError> {
        if !bytes.len().is_multiple_of(CELL_BYTES) {
            return Err(SketchError::Ragged(bytes.len()));
        }
        let count = bytes.len() / CELL_BYTES;
        if count == 0 || !count.is_multiple_of(HASHES) || count > MAX_CELLS {
            return Err(SketchError::BadSize(count));
        }
        let cells = bytes
            .chunks_exact(CELL_BYTES)
            .map(|c| {
                let mut id = [0u8; ID_BYTES];
                id.copy_from_slice(&c[1..1 + ID_BYTES]);
                let mut hash = [0u8; HASH_BYTES];
                hash.copy_from_slice(&c[1 + ID_BYTES..1 + ID_BYTES + HASH_BYTES]);
                let mut check = [0u8; CHECK_BYTES];
                check.copy_from_slice(&c[1 + ID_BYTES + HASH_BYTES..]);
                Cell {
                    count: i8::from_be_bytes([c[0]]),
                    id,
                    hash: u64::from_be_bytes(hash),
                    check: u32::from_be_bytes(check),
                }
            })
            .collect();
        Ok(Self { seed, cells })
    }

    /// A pair's 64-bit key under this table's seed, from which its cells and check derive.
    fn key(&self, id: &[u8; ID_BYTES], hash: u64) -> u64 {
        let (high, low) = id.split_at(ID_BYTES / 2);
        let high = u64::from_be_bytes(high.try_into().unwrap_or_default());
        let low = u64::from_be_bytes(low.try_into().unwrap_or_default());
        mix(self.seed ^ hash ^ mix(low ^ mix(high)))
    }

    fn check(&self, key: u64) -> u32 {
        (mix(key ^ 0x5851_f42d_4c95_7f2d) >> 32) as u32
    }

    /// The pair's cell in each quarter of the table.
    fn positions(&self, key: u64) -> [usize; HASHES] {
        let part = self.cells.len() / HASHES;
        std::array::from_fn(|i| {
            let h = mix(key.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            i * part + (h % part as u64) as usize
        })
    }
}

/// The splitmix64 finaliser: a cheap, well-mixing, non-linear 64-bit hash. The pairs' hashes
/// are already SHA-256 output; this only spreads them over cells and makes a check that a XOR
/// of several pairs does not pass.
fn mix(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A deterministic pair generator, so every run checks the same tables.
    struct Pairs(u64);

    impl Pairs {
        fn next(&mut self) -> (DocumentId, u64) {
            self.0 += 1;
            let a = mix(self.0);
            let b = mix(a);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&a.to_be_bytes());
            id[8..].copy_from_slice(&b.to_be_bytes());
            (DocumentId::from_bytes(id), mix(b))
        }
    }

    /// Both sides share `shared` pairs; `ours` and `theirs` are held by one side each.
    fn reconcile(
        seed: u64,
        cells: usize,
        shared: &[(DocumentId, u64)],
        ours: &[(DocumentId, u64)],
        theirs: &[(DocumentId, u64)],
    ) -> Result<Difference, SketchError> {
        let mut mine = Sketch::new(seed, cells);
        let mut other = Sketch::new(seed, cells);
        for (d, h) in shared.iter().chain(ours) {
            mine.insert(d, *h);
        }
        for (d, h) in shared.iter().chain(theirs) {
            other.insert(d, *h);
        }
        // Through the wire format, as the device gets it.
        let other = Sketch::decode(seed, &other.encode()).unwrap();
        mine.subtract(&other)?;
        mine.peel()
    }

    fn sorted(mut v: Vec<(DocumentId, u64)>) -> Vec<(DocumentId, u64)> {
        v.sort();
        v
    }

    #[test]
    fn a_difference_on_either_side_or_both_is_recovered_exactly() {
        let mut pairs = Pairs(0);
        let shared: Vec<_> = (0..10_000).map(|_| pairs.next()).collect();
        // A document changed on one side is two pairs (old and new hash, same id); one only a
        // side holds is one pair.
        let (changed, _) = pairs.next();
        let ours = vec![(changed, 1), pairs.next()];
        let theirs = vec![(changed, 2), pairs.next(), pairs.next()];
        let cells = cells_for(ours.len() + theirs.len());
        for (o, t) in [
            (&ours[..], &[][..]),
            (&[][..], &theirs[..]),
            (&ours, &theirs),
        ] {
            let difference = reconcile(7, cells, &shared, o, t).unwrap();
            assert_eq!(sorted(difference.ours), sorted(o.to_vec()));
            assert_eq!(sorted(difference.theirs), sorted(t.to_vec()));
        }
        // Nothing differs: the difference is empty, whatever the size.
        assert_eq!(
            reconcile(7, 4, &shared, &[], &[]).unwrap(),
            Difference::default()
        );
    }

    #[test]
    fn a_table_too_small_for_the_difference_says_so() {
        let mut pairs = Pairs(100);
        let shared: Vec<_> = (0..1000).map(|_| pairs.next()).collect();
        let ours: Vec<_> = (0..60).map(|_| pairs.next()).collect();
        let theirs: Vec<_> = (0..60).map(|_| pairs.next()).collect();
        assert_eq!(
            reconcile(1, cells_for(4), &shared, &ours, &theirs),
            Err(SketchError::Undecodable)
        );
        let right = reconcile(1, cells_for(120), &shared, &ours, &theirs).unwrap();
        assert_eq!(right.ours.len() + right.theirs.len(), 120);
    }

    #[test]
    fn the_sizing_decodes_at_least_99_percent_of_differences_of_every_size() {
        let mut pairs = Pairs(1 << 40);
        let shared: Vec<_> = (0..200).map(|_| pairs.next()).collect();
        for size in [1usize, 2, 3, 5, 10, 20, 40, 80, 150, 300, 500] {
            let trials = if size > 100 { 100 } else { 400 };
            let mut decoded = 0;
            for trial in 0..trials {
                let ours: Vec<_> = (0..size / 2).map(|_| pairs.next()).collect();
                let theirs: Vec<_> = (0..size - size / 2).map(|_| pairs.next()).collect();
                if let Ok(d) = reconcile(trial, cells_for(size), &shared, &ours, &theirs) {
                    assert_eq!(d.ours.len() + d.theirs.len(), size);
                    decoded += 1;
                }
            }
            assert!(
                decoded * 100 >= trials * 99,
                "{size} pairs: {decoded} of {trials} decoded"
            );
        }
    }

    #[test]
    fn bad_tables_from_a_peer_are_errors_not_panics() {
        assert_eq!(
            Sketch::decode(0, &[0; CELL_BYTES + 1]),
            Err(SketchError::Ragged(CELL_BYTES + 1))
        );
        assert_eq!(Sketch::decode(0, &[]), Err(SketchError::BadSize(0)));
        assert_eq!(
            Sketch::decode(0, &[0; 2 * CELL_BYTES]),
            Err(SketchError::BadSize(2))
        );
        assert_eq!(
            Sketch::decode(0, &vec![0; (MAX_CELLS + 4) * CELL_BYTES]),
            Err(SketchError::BadSize(MAX_CELLS + 4))
        );
        let mut small = Sketch::new(0, 4);
        assert_eq!(
            small.subtract(&Sketch::new(0, 8)),
            Err(SketchError::Mismatch(4, 8))
        );
        // Garbage of the right size peels to an error, never a panic or a loop: every cell
        // claims one pair, none of them consistent.
        let garbage: Vec<u8> = (0..100 * CELL_BYTES)
            .map(|i| {
                if i % CELL_BYTES == 0 {
                    1
                } else {
                    (i * 7) as u8
                }
            })
            .collect();
        let table = Sketch::decode(3, &garbage).unwrap();
        assert!(table.peel().is_err());
        // A table holding one pair peels to it, whatever its size.
        let mut forged = Sketch::new(5, 4);
        forged.insert(&DocumentId::from_bytes([9; 16]), 4);
        let difference = forged.peel().unwrap();
        assert_eq!(difference.ours, vec![(DocumentId::from_bytes([9; 16]), 4)]);
    }
}
