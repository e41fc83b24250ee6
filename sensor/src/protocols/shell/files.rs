//! The files a session's shell commands "wrote": kept in memory until the attacker shows the
//! file is complete (makes it executable, runs it, deletes it, or leaves), then handed over to
//! be kept as a sample.
//!
//! WHY in memory and not streamed to the sample area: loaders truncate (`>f`), append
//! (`>>f`), rename and copy before a file is whole, so nothing can be hashed until then; and a
//! file is only worth a sample once it has bytes. Bounded three ways: at most `max_files`
//! files per session (more are counted, not kept), each at most `max_file` bytes, and all of
//! them together at most `budget` bytes (the session's payload cap, zero while the memory
//! governor pauses payloads). A write past a cap keeps what fits and marks the file truncated,
//! so the sample event says its hash does not cover everything the attacker wrote.

/// One file being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualFile {
    /// Absolute path, as the attacker named it (after `cd`).
    pub path: String,
    pub data: Vec<u8>,
    /// Some write did not fit under a cap.
    pub truncated: bool,
}

/// The files of one session.
#[derive(Debug)]
pub struct VirtualFiles {
    files: Vec<VirtualFile>,
    max_files: usize,
    max_file: usize,
    budget: usize,
    used: usize,
    /// Files that could not be tracked because `max_files` were open.
    pub shed_files: u64,
    /// Set while a command runs whose input was cut at a cap (a here-document or an SSH
    /// `exec`'s stdin longer than the shell follows): what it writes is marked truncated.
    pub input_cut: bool,
}

impl VirtualFiles {
    pub fn new(max_files: usize, max_file: usize, budget: usize) -> VirtualFiles {
        VirtualFiles { files: Vec::new(), max_files, max_file, budget, used: 0, shed_files: 0, input_cut: false }
    }

    pub fn get(&self, path: &str) -> Option<&VirtualFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Paths of the files, in creation order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.path.as_str())
    }

    /// Writes `data` to `path`: appends, or replaces the content (`>`). Creates the file.
    pub fn write(&mut self, path: &str, data: &[u8], append: bool) {
        let idx = match self.files.iter().position(|f| f.path == path) {
            Some(i) => i,
            None => {
                if self.files.len() >= self.max_files {
                    self.shed_files += 1;
                    return;
                }
                self.files.push(VirtualFile { path: path.to_string(), data: Vec::new(), truncated: false });
                self.files.len() - 1
            }
        };
        let f = &mut self.files[idx];
        if !append {
            self.used -= f.data.len();
            f.data = Vec::new();
            f.truncated = false;
        }
        let room = (self.max_file.saturating_sub(f.data.len())).min(self.budget.saturating_sub(self.used));
        let take = data.len().min(room);
        f.data.extend_from_slice(&data[..take]);
        self.used += take;
        if take < data.len() || self.input_cut {
            f.truncated = true;
        }
    }

    /// Removes and returns the file at `path` if it has any bytes (an empty file is dropped
    /// quietly: loaders create and `chmod` the empty target before they fill it, so an empty
    /// file stays open for writing).
    pub fn take_if_written(&mut self, path: &str) -> Option<VirtualFile> {
        let i = self.files.iter().position(|f| f.path == path)?;
        if self.files[i].data.is_empty() && !self.files[i].truncated {
            return None;
        }
        let f = self.files.remove(i);
        self.used -= f.data.len();
        Some(f)
    }

    /// Forgets `path` (an `rm` of an empty file).
    pub fn forget(&mut self, path: &str) {
        if let Some(i) = self.files.iter().position(|f| f.path == path) {
            let f = self.files.remove(i);
            self.used -= f.data.len();
        }
    }

    /// Renames `from` to `to` (replacing `to`). False when `from` is not a tracked file.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        if self.get(from).is_none() {
            return false;
        }
        if from != to {
            self.forget(to);
            if let Some(f) = self.files.iter_mut().find(|f| f.path == from) {
                f.path = to.to_string();
            }
        }
        true
    }

    /// Copies `from` to `to` (within the caps). False when `from` is not a tracked file.
    pub fn copy(&mut self, from: &str, to: &str) -> bool {
        let Some(src) = self.get(from).cloned() else { return false };
        if from != to {
            self.write(to, &src.data, false);
            if src.truncated {
                if let Some(f) = self.files.iter_mut().find(|f| f.path == to) {
                    f.truncated = true;
                }
            }
        }
        true
    }

    /// Every file that has bytes, in creation order (the session ends).
    pub fn take_all(&mut self) -> Vec<VirtualFile> {
        self.used = 0;
        std::mem::take(&mut self.files).into_iter().filter(|f| !f.data.is_empty() || f.truncated).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_append_truncate_and_take() {
        let mut v = VirtualFiles::new(4, 100, 1000);
        v.write("/tmp/d", b"", false);
        assert_eq!(v.take_if_written("/tmp/d"), None, "an empty file stays open");
        v.write("/tmp/d", b"\x7fEL", true);
        v.write("/tmp/d", b"F", true);
        assert_eq!(v.get("/tmp/d").map(|f| f.data.as_slice()), Some(&b"\x7fELF"[..]));
        v.write("/tmp/d", b"x", false);
        let f = v.take_if_written("/tmp/d").unwrap();
        assert_eq!((f.data.as_slice(), f.truncated), (&b"x"[..], false));
        assert!(v.get("/tmp/d").is_none());
        v.input_cut = true;
        v.write("/tmp/e", b"abc", false);
        assert!(v.get("/tmp/e").unwrap().truncated, "a write from cut input is marked");
    }

    #[test]
    fn caps_keep_what_fits_and_count_the_rest() {
        let mut v = VirtualFiles::new(2, 4, 6);
        v.write("/a", b"123456", false);
        assert_eq!(v.get("/a").unwrap().data, b"1234");
        assert!(v.get("/a").unwrap().truncated);
        v.write("/b", b"abcd", false);
        assert_eq!(v.get("/b").unwrap().data, b"ab", "the session budget");
        v.write("/c", b"x", false);
        assert_eq!(v.shed_files, 1);
        // Taking a file gives its bytes back to the budget.
        assert!(v.take_if_written("/a").is_some());
        v.write("/b", b"cd", true);
        assert_eq!(v.get("/b").unwrap().data, b"abcd");
    }

    #[test]
    fn rename_copy_and_take_all() {
        let mut v = VirtualFiles::new(4, 100, 1000);
        v.write("/tmp/.s", b"abc", false);
        assert!(v.rename("/tmp/.s", "/tmp/x"));
        assert!(!v.rename("/nope", "/tmp/y"));
        assert!(v.copy("/tmp/x", "/tmp/y"));
        v.write("/tmp/empty", b"", false);
        let all: Vec<(String, Vec<u8>)> = v.take_all().into_iter().map(|f| (f.path, f.data)).collect();
        assert_eq!(all, vec![("/tmp/x".into(), b"abc".to_vec()), ("/tmp/y".into(), b"abc".to_vec())]);
    }
}
