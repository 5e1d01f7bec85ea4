//! Generates the Swift sources, C headers and XCFramework modulemap for Apple builds.
fn main() {
    uniffi::uniffi_bindgen_swift()
}
