//! Rewrites `testvectors/ride_codes_v1.json`, `testvectors/acks_v1.json`,
//! `testvectors/bundles_v2.json` and `testvectors/bundles_v3.json` from
//! the seed. Run after an intended format change; the `golden` test
//! fails until you do.

use fare_credential::testvectors as tv;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testvectors");
    let path = dir.join("ride_codes_v1.json");
    std::fs::write(&path, tv::to_json(&tv::generate(tv::SEED))).expect("write vectors");
    println!("wrote {}", path.display());
    let path = dir.join("acks_v1.json");
    std::fs::write(&path, tv::acks_to_json(&tv::generate_acks(tv::SEED))).expect("write vectors");
    println!("wrote {}", path.display());
    let path = dir.join("bundles_v2.json");
    std::fs::write(
        &path,
        tv::bundles_to_json(&tv::generate_bundles_v2(tv::SEED)),
    )
    .expect("write vectors");
    println!("wrote {}", path.display());
    let path = dir.join("bundles_v3.json");
    std::fs::write(
        &path,
        tv::bundles_to_json(&tv::generate_bundles_v3(tv::SEED)),
    )
    .expect("write vectors");
    println!("wrote {}", path.display());
}
