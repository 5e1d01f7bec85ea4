//! Tandem bindings.
uniffi::setup_scaffolding!("tandem");

/// The version of the Tandem core this library was built from.
#[uniffi::export]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
