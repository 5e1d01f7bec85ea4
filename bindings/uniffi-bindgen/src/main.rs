//! Generates foreign-language bindings from the built `tandem_bindings` library.
fn main() {
    uniffi::uniffi_bindgen_main()
}
