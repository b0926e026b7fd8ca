//! Comparing a shipped generated file with what its source renders now.

/// `None` when equal, else where they first differ, for a test failure message.
pub fn first_difference(shipped: &str, fresh: &str) -> Option<String> {
    if shipped == fresh {
        return None;
    }
    let line = shipped
        .lines()
        .zip(fresh.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| shipped.lines().count().min(fresh.lines().count()));
    Some(format!(
        "first difference at line {}:\n  shipped: {:?}\n  fresh:   {:?}",
        line + 1,
        shipped.lines().nth(line).unwrap_or("<end of file>"),
        fresh.lines().nth(line).unwrap_or("<end of file>"),
    ))
}
