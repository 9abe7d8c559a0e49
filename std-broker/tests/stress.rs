//! 4 threads × 10,000 beads × random operations on one `Beadie`. At the end
//! no bead is stuck Queued or Compiling, and every code object is accounted
//! for: compiled = released + installed + waiting in the retire ring; after
//! invalidating everything and quiescing, compiled = released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_std::{AlwaysRecompilePolicy, BailoutInfo, Bead, BeadState, Beadie, BeadieConfig, ThresholdPolicy};

extern "C" fn native_a() -> i64 {
    1
}
extern "C" fn native_b() -> i64 {
    2
}

/// xorshift64*: deterministic per thread, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn compile_for(choice: u64) -> impl FnOnce(&Arc<Bead>) -> *mut () + Send + 'static {
    move |_| match choice {
        0 => panic!("injected compile panic"),
        1 => std::ptr::null_mut(),
        2 => native_b as extern "C" fn() -> i64 as *mut (),
        _ => native_a as extern "C" fn() -> i64 as *mut (),
    }
}

#[test]
fn four_threads_ten_thousand_beads_random_operations() {
    const BEADS: usize = 10_000;
    const OPS_PER_THREAD: usize = 60_000;
    let config = BeadieConfig { workers: 2, queue_capacity: 64, ..BeadieConfig::default() };
    let beadie = Arc::new(Beadie::with_config(ThresholdPolicy::new(8), config));
    let beads: Arc<Vec<Arc<Bead>>> =
        Arc::new((0..BEADS).map(|_| beadie.register(std::ptr::null_mut(), None)).collect());
    std::panic::set_hook(Box::new(|info| {
        let injected = info.payload().downcast_ref::<&str>() == Some(&"injected compile panic");
        if !injected {
            eprintln!("{info}");
        }
    }));

    let threads: Vec<_> = (0..4u64)
        .map(|seed| {
            let (beadie, beads) = (Arc::clone(&beadie), Arc::clone(&beads));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1));
                let quiescent = beadie.register_thread();
                for op in 0..OPS_PER_THREAD {
                    let bead = &beads[rng.below(BEADS as u64) as usize];
                    match rng.below(100) {
                        0..=79 => {
                            let choice = rng.below(20);
                            for _ in 0..rng.below(16) {
                                if let Some(code) = beadie.on_invoke(bead, compile_for(choice)) {
                                    // SAFETY: only `native_a` / `native_b` are ever installed.
                                    let f: extern "C" fn() -> i64 = unsafe { std::mem::transmute(code) };
                                    assert!(matches!(f(), 1 | 2));
                                }
                            }
                        }
                        80..=84 => {
                            let _ = bead.reload();
                        }
                        85..=87 => bead.invalidate(),
                        88..=91 => {
                            let _ = bead.swap_compiled(native_b as extern "C" fn() -> i64 as *mut ());
                        }
                        92..=95 => {
                            let info = BailoutInfo { guard_id: 1, pc_offset: 0, generation: bead.generation() };
                            let _ = bead.on_bailout(info, &AlwaysRecompilePolicy);
                        }
                        _ => {
                            let _ = beadie.submit(bead, compile_for(rng.below(20)));
                        }
                    }
                    if op % 64 == 0 {
                        quiescent.quiescent();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a stress thread panicked");
    }

    // Let the workers drain what is queued, then nothing may be left in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while beads.iter().any(|b| matches!(b.state(), BeadState::Queued | BeadState::Compiling)) {
        assert!(Instant::now() < deadline, "beads stuck in Queued/Compiling");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(beadie.stats().queue_depth, 0);

    // A worker may still be finishing a job whose bead moved on (its stale
    // result is counted compiled a moment before it is released): the
    // equation must hold once the workers have settled.
    let accounted = || {
        let (compiled, released) = beadie.code_counts();
        let installed = beads.iter().filter(|b| b.compiled().is_some()).count() as u64;
        let retiring = u64::from(beadie.stats().retire_depth);
        // Parked: retired before the first thread registered (unmanaged).
        let parked = beadie.parked_code() as u64;
        (compiled, released + installed + retiring + parked)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while accounted().0 != accounted().1 {
        assert!(Instant::now() < deadline, "code unaccounted for: {:?}", accounted());
        std::thread::sleep(Duration::from_millis(5));
    }
    let (compiled, _) = accounted();
    assert!(compiled > 100, "the stress compiled little: {compiled}");

    // Quiesce as we go, as a host would: the retire ring is bounded.
    for (index, bead) in beads.iter().enumerate() {
        bead.invalidate();
        if index % 256 == 255 {
            beadie.quiesce();
        }
    }
    beadie.quiesce();
    beadie.quiesce();
    let (compiled, released) = beadie.code_counts();
    let parked = beadie.parked_code() as u64;
    assert_eq!(compiled, released + parked, "after invalidating all and quiescing twice, all is released or parked");
    let stats = beadie.stats();
    assert!(stats.failures > 0 && stats.compiles > 0 && stats.bailouts > 0, "{stats:?}");
    let _ = std::panic::take_hook();
}
