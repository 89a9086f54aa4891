//! What a tick spends on its LLM: prompt and completion tokens, counted by the role-play
//! and by the persona answering the server's sampling requests alike.

use std::sync::atomic::{AtomicI64, Ordering};

/// Prompt and completion tokens spent, by the role-play and by answering the server.
#[derive(Debug, Default)]
pub(super) struct Spend {
    tokens_in: AtomicI64,
    tokens_out: AtomicI64,
}

impl Spend {
    pub fn add(&self, tokens_in: u64, tokens_out: u64) {
        // Saturating: no sum of counts an endpoint sends can wrap below zero.
        let add = |total: &AtomicI64, n: u64| {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_add(n)));
        };
        add(&self.tokens_in, tokens_in);
        add(&self.tokens_out, tokens_out);
    }

    pub fn tokens_in(&self) -> i64 {
        self.tokens_in.load(Ordering::Relaxed)
    }

    pub fn tokens_out(&self) -> i64 {
        self.tokens_out.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        (self.tokens_in() + self.tokens_out()).max(0) as u64
    }
}
