//! Rewrites `testvectors/ride_codes_v1.json` from the seed. Run after an
//! intended format change; the `golden` test fails until you do.

fn main() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testvectors/ride_codes_v1.json");
    let text = fare_credential::testvectors::to_json(&fare_credential::testvectors::generate(
        fare_credential::testvectors::SEED,
    ));
    std::fs::write(&path, text).expect("write vectors");
    println!("wrote {}", path.display());
}
