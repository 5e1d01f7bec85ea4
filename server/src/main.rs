//! `tandem-server`: the relay's command line.
fn main() {}
