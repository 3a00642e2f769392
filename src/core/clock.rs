//! The controller's clock. Production uses the system time; tests and demos may
//! start the clock at another instant (for example just before a maintenance
//! window opens), after which it runs at normal speed.

use jiff::{SignedDuration, Timestamp};

/// Wall clock with an optional fixed offset from the system time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset: SignedDuration,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that reads `start` now and runs on from there.
    pub fn starting_at(start: Timestamp) -> Self {
        Clock {
            offset: start.duration_since(Timestamp::now()),
        }
    }

    /// The current instant.
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.offset)
            .unwrap_or_else(|_| Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_clock_reads_the_start_and_runs_on() {
        let start: Timestamp = "2026-11-30T20:59:58Z".parse().unwrap();
        let c = Clock::starting_at(start);
        let d = c.now().duration_since(start);
        assert!(
            d >= SignedDuration::ZERO && d < SignedDuration::from_secs(5),
            "{d:?}"
        );
        let sys = Clock::system().now().duration_since(Timestamp::now());
        assert!(sys.abs() < SignedDuration::from_secs(1));
    }
}
