//! The app's statuses and state machine (the spec's), and their spellings,
//! for the property tests.

/// Every status of the spec, lowercase.
pub const ALL_STATUSES: [&str; 13] = [
    "queued",
    "pending",
    "preparing",
    "running",
    "pausing",
    "paused",
    "resuming",
    "completed",
    "failed",
    "canceling",
    "cancelled",
    "intervening",
    "requires_intervention",
];

/// The app's state machine: where a run may go from each status.
pub fn next_statuses(s: &str) -> &'static [&'static str] {
    match s {
        "queued" => &["pending"],
        "pending" => &["preparing"],
        "preparing" => &["running"],
        "running" => &["pausing", "canceling", "intervening", "completed", "failed"],
        "pausing" => &["paused", "running"],
        "paused" => &["resuming"],
        "resuming" => &["running"],
        "canceling" => &["cancelled"],
        "intervening" => &["requires_intervention"],
        _ => &[],
    }
}

/// `s` spelled lowercase (0), UPPERCASE (1), Capitalized (2) or in a mixture
/// of cases (3: every second letter upper, never live).
pub fn in_any_case(s: &str, case: u8) -> String {
    match case % 4 {
        0 => s.to_string(),
        1 => s.to_uppercase(),
        2 => {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
        _ => s
            .chars()
            .enumerate()
            .map(|(i, ch)| {
                if i % 2 == 1 {
                    ch.to_ascii_uppercase()
                } else {
                    ch
                }
            })
            .collect(),
    }
}
