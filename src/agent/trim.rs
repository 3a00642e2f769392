//! Gives the agent's start-up pages back to the kernel.
//!
//! An idle agent's resident memory is mostly mapped program code, not heap:
//! the start-up (command line, kubeconfig, TLS set-up, the first list of its
//! Node) touches code spread over most of the binary, and the kernel maps
//! pages around each one it faults in. After start-up the agent asks the
//! kernel once to page its read-only program mappings out
//! (`madvise(MADV_PAGEOUT)`, Linux 5.4 or later; ignored elsewhere): they
//! are clean file pages, so nothing is written, and whatever the idle loop
//! needs faults back in from the page cache or the image.

/// Read-only mappings of the running executable, from `/proc/self/maps`.
fn program_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if path != exe || perms.contains('w') || fields.next().is_some() {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end - start))
        })
        .take(64)
        .collect()
}

/// Pages the agent's read-only program mappings out; returns how many bytes
/// were advised (0 when the kernel or the platform does not support it).
pub(crate) fn release_startup_pages() -> usize {
    let (Ok(maps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/maps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return 0;
    };
    let Some(exe) = exe.to_str() else { return 0 };
    let mut advised = 0;
    for (start, len) in program_mappings(&maps, exe) {
        // SAFETY: the range is a whole read-only, file-backed mapping of this
        // program as the kernel lists it; MADV_PAGEOUT only drops clean pages
        // from memory (they fault back unchanged) and never unmaps the range.
        let r =
            unsafe { rustix::mm::madvise(start as *mut _, len, rustix::mm::Advice::LinuxPageOut) };
        if r.is_ok() {
            advised += len;
        }
    }
    advised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_mappings_of_the_program_are_paged_out() {
        let maps = "\
55d0a0000000-55d0a0200000 r--p 00000000 fe:00 1 /usr/local/bin/sofort
55d0a0200000-55d0a0900000 r-xp 00200000 fe:00 1 /usr/local/bin/sofort
55d0a0900000-55d0a0950000 rw-p 00900000 fe:00 1 /usr/local/bin/sofort
55d0b0000000-55d0b0100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fe:00 2 /usr/lib/libc.so.6
7f0000200000-7f0000300000 r-xp 00000000 fe:00 3 /usr/local/bin/sofort (deleted)
";
        assert_eq!(
            program_mappings(maps, "/usr/local/bin/sofort"),
            vec![(0x55d0a0000000, 0x200000), (0x55d0a0200000, 0x700000)]
        );
        assert!(program_mappings("garbage\n\n1-0 r--p", "/x").is_empty());
    }

    #[test]
    fn the_running_program_finds_its_own_mappings_and_keeps_working() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let found = program_mappings(&maps, exe.to_str().unwrap());
        assert!(
            !found.is_empty(),
            "no read-only mapping of {exe:?} in\n{maps}"
        );
        let total: usize = found.iter().map(|(_, len)| len).sum();
        // Paged out (or not supported): at most every mapping, and the
        // program runs on.
        assert!(release_startup_pages() <= total);
        assert_eq!(program_mappings(&maps, exe.to_str().unwrap()), found);
    }
}
