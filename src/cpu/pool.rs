//! Persistent worker threads for the parts of a call.
//!
//! Spawning and joining a scoped thread costs ~50 µs on the development VM —
//! 8% of a decode step over a 4096 × 4096 weight. The pool keeps its workers
//! between calls: a worker that has just finished spins briefly for the next
//! part (calls come in bursts, layer after layer), then sleeps on a condition
//! variable. The calling thread runs the last part itself and waits for the
//! others, so parts may borrow the caller's stack, as with `std::thread::scope`.
//!
//! Workers never wait on other parts, so concurrent callers sharing the pool
//! cannot deadlock: a part that finds every worker busy waits in the queue
//! while its caller computes. A child process made by `fork` starts a pool of
//! its own (the parent's workers do not exist there).

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker (or a caller waiting for its parts) spins before
/// sleeping: long enough to bridge the gap between two layers of a model.
const SPIN: Duration = Duration::from_micros(100);

/// Runs `f` on each part and returns the results in order: the last part on
/// the calling thread, the others on the pool's workers (or, when a worker
/// cannot be started, on the calling thread too). A panic in any part is
/// re-raised here, once every part has finished.
pub(crate) fn run_parts<P: Send, R: Send>(parts: impl Iterator<Item = P>, f: impl Fn(P) -> R + Sync) -> Vec<R> {
    let mut parts: Vec<P> = parts.collect();
    let Some(last) = parts.pop() else { return Vec::new() };
    if parts.is_empty() {
        return vec![f(last)];
    }
    let queued = parts.len();
    let batch = Batch {
        parts: parts.into_iter().map(|p| Mutex::new(Some(p))).collect(),
        results: std::iter::repeat_with(|| Mutex::new(None)).take(queued).collect(),
        f: &f,
        remaining: AtomicUsize::new(queued),
        caller: std::thread::current(),
    };
    let started = pool().submit(&batch, queued);
    // Parts no worker took run here (only when workers could not be started).
    for index in started..queued {
        // SAFETY: the batch is alive here, and `index` was not handed to a worker.
        unsafe { batch.run_here(index) };
    }
    let own = catch_unwind(AssertUnwindSafe(|| f(last)));
    // Wait for every part before anything else: workers borrow this frame.
    let deadline = Instant::now() + SPIN;
    while batch.remaining.load(Ordering::Acquire) != 0 {
        if Instant::now() < deadline {
            std::hint::spin_loop();
        } else {
            std::thread::park();
        }
    }
    let mut out = Vec::with_capacity(queued + 1);
    for r in batch.results {
        match r.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(Ok(r)) => out.push(r),
            Some(Err(panic)) => resume_unwind(panic),
            None => unreachable!("every part ran before `remaining` reached 0"),
        }
    }
    match own {
        Ok(r) => out.push(r),
        Err(panic) => resume_unwind(panic),
    }
    out
}

/// A part's result, or the panic it raised.
type PartResult<R> = Result<R, Box<dyn Any + Send>>;

/// One call's parts, on the caller's stack.
struct Batch<'f, P, R, F> {
    parts: Vec<Mutex<Option<P>>>,
    results: Vec<Mutex<Option<PartResult<R>>>>,
    f: &'f F,
    /// Parts not yet finished; the worker that brings it to 0 wakes the caller.
    remaining: AtomicUsize,
    caller: Thread,
}

impl<P: Send, R: Send, F: Fn(P) -> R + Sync> Batch<'_, P, R, F> {
    /// Runs part `index` on this thread.
    ///
    /// # Safety
    /// Each index is run once.
    unsafe fn run_here(&self, index: usize) {
        // SAFETY: `self` is alive for the call; the index as the caller promises.
        unsafe { Self::run(self as *const Self as *const (), index) }
    }

    /// Runs part `index` of the batch at `batch`.
    ///
    /// # Safety
    /// `batch` points to a live `Batch<P, R, F>` whose caller waits for
    /// `remaining` to reach 0, and each index is run once.
    unsafe fn run(batch: *const (), index: usize) {
        // SAFETY: as the caller promises; the batch outlives this call because
        // its owner waits until `remaining` is 0, which happens only below.
        let batch = unsafe { &*(batch as *const Self) };
        let part = lock(&batch.parts[index]).take();
        let result = catch_unwind(AssertUnwindSafe(|| (batch.f)(part.expect("each part runs once"))));
        *lock(&batch.results[index]) = Some(result);
        // After the decrement the batch may be gone: take the handle first.
        let caller = batch.caller.clone();
        if batch.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            caller.unpark();
        }
    }
}

/// A part handed to a worker: a type-erased batch and the part's index.
struct Job {
    batch: *const (),
    run: unsafe fn(*const (), usize),
    index: usize,
}

// SAFETY: a job only travels to a worker, which runs it while its caller waits
// (see `Batch::run`); the batch's contents are `Send`/`Sync` by the bounds there.
unsafe impl Send for Job {}

struct Pool {
    queue: Mutex<VecDeque<Job>>,
    /// Jobs in the queue, read without the lock by spinning workers.
    queued: AtomicUsize,
    wake: Condvar,
    workers: Mutex<usize>,
    /// The process that started the workers (see the module comment on `fork`).
    pid: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's pool.
fn pool() -> Arc<Pool> {
    static POOL: Mutex<Option<Arc<Pool>>> = Mutex::new(None);
    let mut slot = lock(&POOL);
    let pid = std::process::id();
    match &*slot {
        Some(pool) if pool.pid == pid => pool.clone(),
        _ => {
            let pool = Arc::new(Pool {
                queue: Mutex::new(VecDeque::new()),
                queued: AtomicUsize::new(0),
                wake: Condvar::new(),
                workers: Mutex::new(0),
                pid,
            });
            *slot = Some(pool.clone());
            pool
        }
    }
}

impl Pool {
    /// Queues parts `0..count` of `batch`, with at least `count` workers
    /// alive; returns how many were queued (fewer only when a worker could not
    /// be started: the caller runs the rest).
    fn submit<P: Send, R: Send, F: Fn(P) -> R + Sync>(
        self: Arc<Self>,
        batch: &Batch<'_, P, R, F>,
        count: usize,
    ) -> usize {
        let count = count.min(self.grow(count));
        let mut queue = lock(&self.queue);
        for index in 0..count {
            queue.push_back(Job {
                batch: batch as *const Batch<P, R, F> as *const (),
                run: Batch::<P, R, F>::run,
                index,
            });
        }
        self.queued.fetch_add(count, Ordering::Release);
        drop(queue);
        for _ in 0..count {
            self.wake.notify_one();
        }
        count
    }

    /// Starts workers until there are `wanted`; returns how many there are.
    fn grow(self: &Arc<Self>, wanted: usize) -> usize {
        let mut workers = lock(&self.workers);
        while *workers < wanted {
            let pool = self.clone();
            let started = std::thread::Builder::new().name("llmint8-worker".into()).spawn(move || pool.work()).is_ok();
            if !started {
                break;
            }
            *workers += 1;
        }
        *workers
    }

    fn work(&self) {
        loop {
            let job = self.next_job();
            // SAFETY: jobs are made in `submit` from a batch whose caller waits
            // for all of them, and each index is queued once.
            unsafe { (job.run)(job.batch, job.index) };
        }
    }

    /// The next job: spins for `SPIN` while the queue is empty, then sleeps.
    fn next_job(&self) -> Job {
        let deadline = Instant::now() + SPIN;
        loop {
            if self.queued.load(Ordering::Acquire) > 0 {
                if let Some(job) = self.pop(&mut lock(&self.queue)) {
                    return job;
                }
            } else if Instant::now() < deadline {
                std::hint::spin_loop();
                continue;
            }
            let mut queue = lock(&self.queue);
            loop {
                if let Some(job) = self.pop(&mut queue) {
                    return job;
                }
                queue = self.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    fn pop(&self, queue: &mut VecDeque<Job>) -> Option<Job> {
        let job = queue.pop_front()?;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        Some(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        for n in 0..9 {
            let out = run_parts(0..n, |i| i * 10);
            assert_eq!(out, (0..n).map(|i| i * 10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn parts_may_borrow_and_write_the_callers_data() {
        let mut data = vec![0u64; 1000];
        let chunks: Vec<&mut [u64]> = data.chunks_mut(100).collect();
        run_parts(chunks.into_iter().enumerate(), |(i, c)| c.iter_mut().for_each(|v| *v = i as u64));
        assert!(data.chunks(100).enumerate().all(|(i, c)| c.iter().all(|&v| v == i as u64)));
    }

    #[test]
    fn a_panicking_part_is_reraised_after_all_parts_finish() {
        let finished = AtomicUsize::new(0);
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_parts(0..4, |i| {
                std::thread::sleep(Duration::from_millis(20));
                assert!(i != 1, "part 1 fails");
                finished.fetch_add(1, Ordering::SeqCst);
            })
        }));
        assert!(result.is_err());
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        // The pool still works afterwards.
        assert_eq!(run_parts(0..3, |i| i + 1), vec![1, 2, 3]);
    }

    #[test]
    fn concurrent_callers_share_the_pool() {
        std::thread::scope(|s| {
            for t in 0..6 {
                s.spawn(move || {
                    for round in 0..200 {
                        let out = run_parts(0..3, |i| i + t + round);
                        assert_eq!(out, vec![t + round, t + round + 1, t + round + 2]);
                    }
                });
            }
        });
    }
}
