//! Refusing a model that would not fit in memory before loading it, with the numbers, rather
//! than letting the kernel kill the server part way through a load (a version that fails to load
//! must never take the server down).

use aiserve_core::LoadError;

/// Memory the system can still give (Linux's `MemAvailable`); `None` where it cannot tell.
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().strip_suffix("kB")?.trim();
    kb.parse::<u64>().ok().map(|kb| kb << 10)
}

/// Refuses a load that takes `need` bytes when only `available` are free; `why` (empty or a
/// parenthesis with a leading space) says what makes it big.
pub fn check(need: u64, available: Option<u64>, why: &str) -> Result<(), LoadError> {
    match available {
        Some(available) if need > available => Err(LoadError::Weights(format!(
            "loading this model takes about {} MB{why}, more than the {} MB of memory available",
            need >> 20,
            available >> 20
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_larger_than_free_memory_are_refused_with_the_numbers() {
        let err = check(26 << 30, Some(24 << 30), " (f32)").unwrap_err().to_string();
        assert!(err.contains("26624 MB (f32)") && err.contains("24576 MB"), "{err}");
        assert!(check(20 << 30, Some(24 << 30), "").is_ok());
        assert!(check(26 << 30, None, "").is_ok());
        assert!(available().is_some_and(|m| m > 0));
    }
}
