//! Hotness profiles and warm start: a profile round-trips through its
//! file; bad files are refused with a typed error and change nothing; a
//! warm start compiles last run's hot set before any call, starts last
//! run's blacklisted functions blacklisted (decaying), and ignores entries
//! whose code hash changed.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_std::{
    BackendAdapter, Bead, BeadState, BoundBead, CompileError, JitBackend, Profile, ProfileError, ProfileKey,
    ThresholdPolicy, WarmStart, WarmStartConfig,
};

struct Native;

impl JitBackend for Native {
    type FunctionDef = extern "C" fn(i64) -> i64;
    type Error = CompileError;
    fn compile(&self, _: &Arc<Bead>, def: Self::FunctionDef) -> Result<*mut (), CompileError> {
        Ok(def as *mut ())
    }
}

extern "C" fn double(x: i64) -> i64 {
    x * 2
}

fn key(id: u64, code_hash: u64) -> ProfileKey {
    ProfileKey { id, code_hash }
}

/// Three functions: `hot` (compiled after 5 calls), `cold` (never
/// called), `bad` (blacklisted), keyed with `hash`.
fn program(adapter: &BackendAdapter<Native>, hash: u64) -> [BoundBead<Native>; 3] {
    ["hot", "cold", "bad"].map(|name| {
        let id = name.len() as u64 * 100 + u64::from(name.as_bytes()[0]);
        adapter.register_keyed(name, key(id, hash), std::ptr::null_mut(), |_: &Arc<Bead>| {
            Ok::<_, String>(double as extern "C" fn(i64) -> i64)
        })
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The first run: `hot` compiles, `bad` is blacklisted.
fn first_run() -> Profile {
    let adapter = BackendAdapter::with_policy(Native, ThresholdPolicy::new(5));
    let [hot, _cold, bad] = program(&adapter, 7);
    wait_until("hot compiles", || adapter.on_invoke_attached(&hot).is_some());
    bad.bead().blacklist();
    adapter.beadie().export_profile()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-profile-{}-{name}", std::process::id()))
}

#[test]
fn a_profile_round_trips_through_its_file() {
    let profile = first_run();
    assert_eq!(profile.entries().len(), 3);
    let hot = &profile.entries()[0];
    assert_eq!((hot.tier_reached, hot.blacklisted), (Some(0), false), "hottest first: {profile:#?}");
    assert!(hot.calls >= 5);
    assert!(profile.entries().iter().any(|entry| entry.blacklisted));
    let path = temp_path("round-trip");
    profile.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), profile);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn warm_start_compiles_the_hot_set_before_any_call_and_blacklists_with_decay() {
    let profile = first_run();
    // A policy that would never promote by calls in this test.
    let adapter = BackendAdapter::with_policy(Native, ThresholdPolicy::new(1_000_000));
    let [hot, cold, bad] = program(&adapter, 7);
    let config = WarmStartConfig { blacklist_for: NonZeroU32::new(10).unwrap(), ..WarmStartConfig::default() };
    let report = adapter.warm_start_with(&profile, config);
    assert_eq!(report, WarmStart { matched: 3, queued: 1, blacklisted: 1, skipped: 0 });
    wait_until("hot compiles without a call", || hot.bead().compiled().is_some());
    assert_eq!(hot.bead().kiln_bead().invocation_count(), 0, "no call was made");
    assert_eq!(cold.bead().state(), BeadState::Interpreted);
    assert!(bad.bead().is_blacklisted());
    // The hinted blacklist decays after its calls, though the default
    // deopt policy never lets a blacklist decay.
    for _ in 0..20 {
        assert!(adapter.on_invoke_attached(&bad).is_none());
    }
    assert!(!bad.bead().is_blacklisted(), "the blacklist from the profile decayed");
}

#[test]
fn a_changed_function_s_entry_counts_for_nothing() {
    let profile = first_run();
    let adapter = BackendAdapter::with_policy(Native, ThresholdPolicy::new(1_000_000));
    let beads = program(&adapter, 8);
    let before = adapter.beadie().stats();
    assert_eq!(adapter.warm_start(&profile), WarmStart::default());
    for bound in &beads {
        assert_eq!(bound.bead().state(), BeadState::Interpreted);
    }
    assert_eq!(adapter.beadie().stats(), before, "nothing queued or blacklisted");
}

#[test]
fn empty_truncated_foreign_and_corrupt_files_are_refused_and_change_nothing() {
    let good = first_run().to_bytes();
    let mut corrupt = good.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("foreign", b"{\"traceEvents\":[]}".to_vec()),
        ("corrupt", corrupt),
    ];
    let adapter = BackendAdapter::with_policy(Native, ThresholdPolicy::new(1_000_000));
    let beads = program(&adapter, 7);
    let before = adapter.beadie().stats();
    for (name, bytes) in cases {
        let path = temp_path(name);
        std::fs::write(&path, &bytes).unwrap();
        let error = Profile::load(&path).expect_err(name);
        std::fs::remove_file(&path).unwrap();
        let expected = match error {
            ProfileError::Empty => "empty",
            ProfileError::Truncated => "truncated",
            ProfileError::Foreign => "foreign",
            ProfileError::Corrupt => "corrupt",
            other => panic!("{name}: {other}"),
        };
        assert_eq!(expected, name);
    }
    assert!(matches!(Profile::load(temp_path("missing")), Err(ProfileError::Io(_))));
    for bound in &beads {
        assert_eq!(bound.bead().state(), BeadState::Interpreted);
    }
    assert_eq!(adapter.beadie().stats(), before);
}
