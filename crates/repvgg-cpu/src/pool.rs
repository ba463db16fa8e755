//! How a network run meets its threads: on a worker of its pool, the pool's other workers
//! kept looking for its jobs between layers.
//!
//! A run is a few dozen fork-joins (one or two per layer). Called from a thread outside the
//! pool, each of them would be injected into the pool and the caller would sleep until it was
//! done; and rayon's idle workers go to sleep after a few dozen rounds without work, so at
//! batch 1, where a layer takes tens of microseconds, each layer also waited for a worker to
//! wake. [`run`] moves the whole run onto a worker and, for its duration, lends each other
//! worker a *keeper*: a job that runs the pool's pending jobs as they appear
//! ([`rayon::yield_now`]) and spins in between, until the run is done.
//!
//! A keeper never spins on a thread that has a run of its own suspended below it, and gives
//! up after [`IDLE`] without work, so a keeper cannot keep a run from finishing: at worst a
//! worker returns to rayon's ordinary idle loop.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a keeper spins without finding a job before it gives the worker back.
const IDLE: Duration = Duration::from_millis(2);

/// How long a keeper spins without finding a job before it also yields its core between
/// looks (longer than the gaps between a run's parallel steps).
const SPIN: Duration = Duration::from_micros(200);

/// Spins a keeper makes between looks at the clock.
const SPINS_PER_CHECK: u32 = 64;

thread_local! {
    /// Whether this thread is running a run's body (possibly suspended in one of its joins).
    static IN_RUN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on a worker of `pool` (rayon's global pool when `None`), the pool's other workers
/// kept busy with its jobs until it returns.
pub(crate) fn run<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(|| with_keepers(f)),
        None if rayon::current_thread_index().is_some() => with_keepers(f),
        // `scope` runs its body on a worker of the global pool.
        None => rayon::scope(|_| with_keepers(f)),
    }
}

/// Runs `f` on this worker with a keeper lent to each other worker of the current pool.
fn with_keepers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // No more keepers than other cores: spinning threads beyond them would take time from
    // the ones with work.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let others = rayon::current_num_threads().min(cores).saturating_sub(1);
    let done = AtomicBool::new(false);
    rayon::in_place_scope(|s| {
        for _ in 0..others {
            let done = &done;
            s.spawn(move |_| keep(done));
        }
        // Marks this thread as running a run, and on the way out (also when `f` panics)
        // restores the mark and lets the keepers go.
        struct Running<'a> {
            outer: bool,
            done: &'a AtomicBool,
        }
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                IN_RUN.set(self.outer);
                self.done.store(true, Ordering::Release);
            }
        }
        let _running = Running {
            outer: IN_RUN.replace(true),
            done: &done,
        };
        f()
    })
}

/// A keeper: runs the pool's pending jobs until `done`, or until it has found none for
/// [`IDLE`]; returns at once on a thread with a run of its own below it (the run's own
/// worker, which may pick up a keeper while it waits in a join).
fn keep(done: &AtomicBool) {
    if IN_RUN.get() {
        return;
    }
    let mut since = Instant::now();
    let mut spins = 0u32;
    while !done.load(Ordering::Acquire) {
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            since = Instant::now();
            spins = 0;
            continue;
        }
        spins += 1;
        if spins < SPINS_PER_CHECK {
            std::hint::spin_loop();
            continue;
        }
        spins = 0;
        let idle = since.elapsed();
        if idle > IDLE {
            return;
        }
        if idle > SPIN {
            // Past the gaps between a run's steps: the core goes to whoever else needs it.
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::mpsc;

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    /// The body runs on a worker of the pool it was given, its result comes back, its
    /// parallel work reaches every worker, and the run returns (its keepers have left).
    #[test]
    fn runs_on_a_worker_and_lends_the_others_to_its_jobs() {
        for n in [1, 2, 4] {
            let p = pool(n);
            let (idx, workers) = run(Some(&p), || {
                let idx = rayon::current_thread_index();
                let mut seen = vec![false; n];
                for _ in 0..200 {
                    let hits: Vec<usize> = (0..64)
                        .into_par_iter()
                        .map(|_| {
                            std::thread::sleep(Duration::from_micros(20));
                            rayon::current_thread_index().unwrap()
                        })
                        .collect();
                    for h in hits {
                        seen[h] = true;
                    }
                    if seen.iter().all(|&s| s) {
                        break;
                    }
                }
                (idx, seen)
            });
            assert!(idx.is_some_and(|i| i < n), "{idx:?}");
            assert!(workers.iter().all(|&s| s), "{n} threads: {workers:?}");
            // The pool runs other work afterwards.
            assert_eq!(p.install(|| (0..100).into_par_iter().sum::<i32>()), 4950);
        }
        // Without a pool, on the global pool's workers; from one of them, in place.
        assert!(run(None, rayon::current_thread_index).is_some());
        assert_eq!(run(None, || run(None, || 7)), 7);
    }

    /// Runs from several threads at once, nested runs and a panicking body all finish: no
    /// keeper waits on a run suspended below it.
    #[test]
    fn concurrent_nested_and_panicking_runs_finish() {
        let p = std::sync::Arc::new(pool(2));
        let (tx, rx) = mpsc::channel();
        for t in 0..4 {
            let (p, tx) = (p.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut total = 0u64;
                for _ in 0..50 {
                    total += run(Some(&p), || {
                        let inner: u64 = run(Some(&p), || (0..1000u64).into_par_iter().sum());
                        inner + (0..1000u64).into_par_iter().map(|v| v * t).sum::<u64>()
                    });
                }
                tx.send(total).unwrap();
            });
        }
        drop(tx);
        let mut got: Vec<u64> = Vec::new();
        while let Ok(v) = rx.recv_timeout(Duration::from_secs(60)) {
            got.push(v);
        }
        got.sort_unstable();
        let want: Vec<u64> = (0..4).map(|t| 50 * (499_500 + 499_500 * t)).collect();
        assert_eq!(got, want, "a run did not finish within a minute");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(Some(&p), || {
                let _: u64 = (0..100u64).into_par_iter().sum();
                panic!("the body's panic")
            })
        }));
        assert!(caught.is_err());
        assert_eq!(run(Some(&p), || 3), 3);
    }
}
