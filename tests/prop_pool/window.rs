//! The commit window (`--commit-every`, issue 15) as a property of the
//! pool: what a crash may repeat stays bounded on every engine.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The commit window (`--commit-every`, issue 15) bounds what a crash
    /// repeats: sampled continuously, the messages handled beyond the last
    /// acknowledged commit stay under `commit_every` plus one claim block,
    /// on every engine, however the acknowledgements lag; and once they
    /// come, everything is handled.
    #[test]
    fn handled_beyond_the_last_acknowledged_commit_stay_within_the_window(
        specs in specs(0),
        lanes in 1..=8usize,
        scheduler in scheduler(),
        every in 1..=120u64,
        ack_every_ms in 0..=3u64,
    ) {
        let world = World::new(specs);
        let total = world.msgs.len() as u64;
        let tracker = Arc::new(OffsetTracker::new());
        tracker.set_commit_every(every);
        let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let h = Arc::clone(&handled);
        let pool = Arc::new(new_pool(
            scheduler,
            config(scheduler, lanes, Ordering::Key, FailurePolicy::Stop, 0),
            Arc::clone(&tracker),
            move |_m: &Message| -> Result<(), HandlerError> {
                h.fetch_add(1, AO::SeqCst);
                Ok(())
            },
        ).unwrap());
        // Submission blocks on the in-flight budget while the window is
        // shut, so it runs beside the acknowledging loop.
        let submitter = {
            let pool = Arc::clone(&pool);
            let msgs = world.msgs.clone();
            std::thread::spawn(move || submit_all(&pool, &msgs, 8))
        };
        let block = tracker.claim_block(usize::MAX, lanes) as u64;
        let mut acked = 0u64;
        let mut last_ack = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now_handled = handled.load(AO::SeqCst);
            prop_assert!(
                now_handled - acked < every + block,
                "{} handled, {} acknowledged: more than commit_every {} + a block of {}",
                now_handled, acked, every, block
            );
            if now_handled == total {
                break;
            }
            prop_assert!(Instant::now() < deadline, "stuck at {} of {} handled", now_handled, total);
            if last_ack.elapsed() >= Duration::from_millis(ack_every_ms) {
                // What a committer does: snapshot, read the state (here
                // nothing to send), acknowledge.
                let snapshot = tracker.commit_snapshot();
                tracker.committed(snapshot);
                acked = snapshot;
                last_ack = Instant::now();
            }
            std::thread::yield_now();
        }
        submitter.join().unwrap().unwrap();
        let report = pool.drain(DRAIN);
        assert_drained(&report)?;
        prop_assert_eq!(report.stats.finished, total);
    }
}
