//! The main job must keep working: run the scripted day and compare with the
//! hand-worked amounts, and the attack scans with their reasons.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_day_settles_to_the_hand_worked_amounts() {
    let dir = tempfile::tempdir().unwrap();
    let s = fare_simulator::walkthrough::run(&dir.path().join("run"), 2017, false)
        .await
        .unwrap();
    let (revenue, balances) = fare_simulator::walkthrough::hand_worked();
    assert_eq!(s.revenue_by_operator, revenue);
    assert_eq!(s.balances, balances);
    let reasons: Vec<_> = s.decisions.iter().filter_map(|d| d.2.clone()).collect();
    assert_eq!(
        reasons,
        [
            "already_used",
            "code_expired",
            "bad_device_signature",
            "revoked"
        ],
        "{:?}",
        s.decisions
    );
    let accepted = s.decisions.iter().filter(|d| d.1 == "accept").count();
    assert_eq!(accepted, 12);
    // Running again into the same directory is refused rather than mixing runs.
    let err = fare_simulator::walkthrough::run(&dir.path().join("run"), 2017, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already holds a demo run"),
        "{err}"
    );
}
