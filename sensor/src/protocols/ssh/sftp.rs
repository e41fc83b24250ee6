//! The SFTP subsystem (`sftp`, and `scp`, which speaks SFTP since OpenSSH 9): uploads are kept
//! as samples, downloads always fail.
//!
//! WHY russh-sftp: it implements the SFTP v3 wire format (packet framing, every request type,
//! the status replies) over any byte stream, independently of russh's version; this module is
//! only the policy. Bounded: at most `max_uploads` files per SSH connection (shared with scp),
//! each streamed into a capture (never held whole: the sample area gets the bytes, memory keeps
//! the payload prefix only), at most [`MAX_HANDLES`] open handles, at most [`MAX_EVENTS`]
//! recorded operations; russh-sftp caps each packet at 256 KiB before it allocates.
//! Writes are expected in order (as OpenSSH sends them); a gap is filled with zeros up to the
//! sample cap, anything else marks the file truncated so the event says its hash is partial.

use crate::capture::PayloadCapture;
use crate::protocols::shell::resolve;
use crate::session::Emitter;
use drosera_uplink::event::Detail;
use russh_sftp::protocol::{Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Open handles (files and directories) per SFTP session.
const MAX_HANDLES: usize = 16;
/// SFTP operations recorded as `Command` events per session.
const MAX_EVENTS: usize = 100;

/// Directories every server has (`stat` says they exist, so clients upload into them).
const DIRS: &[&str] =
    &["/", "/tmp", "/var", "/var/tmp", "/dev", "/dev/shm", "/root", "/home", "/usr", "/etc", "/bin", "/run"];

struct Upload {
    path: String,
    capture: PayloadCapture,
    size: u64,
    truncated: bool,
}

enum Open {
    File(Upload),
    Dir { path: String, listed: bool },
}

/// One SFTP session's handler.
pub(super) struct SftpTrap {
    em: Emitter,
    home: String,
    uploads: Arc<AtomicUsize>,
    max_uploads: usize,
    /// Largest file followed (the sample cap plus one).
    max_file: u64,
    handles: HashMap<String, Open>,
    next: u64,
    events: usize,
    /// Files uploaded in this session and their sizes (answers `stat` and `readdir`).
    written: Vec<(String, u64)>,
}

impl SftpTrap {
    pub fn new(em: Emitter, home: String, uploads: Arc<AtomicUsize>, max_uploads: usize, max_file: u64) -> SftpTrap {
        SftpTrap {
            em,
            home,
            uploads,
            max_uploads,
            max_file,
            handles: HashMap::new(),
            next: 0,
            events: 0,
            written: Vec::new(),
        }
    }

    fn record(&mut self, what: &str, path: &str) {
        if self.events < MAX_EVENTS {
            self.events += 1;
            self.em.emit(Detail::Command { line: format!("sftp {what} {path}") });
        }
    }

    fn path(&self, p: &str) -> String {
        if p.is_empty() || p == "." {
            return self.home.clone();
        }
        let p = p.strip_prefix("~/").map(|r| format!("{}/{r}", self.home)).unwrap_or_else(|| p.to_string());
        resolve(&self.home, &p)
    }

    fn is_dir(&self, path: &str) -> bool {
        DIRS.contains(&path) || path == self.home
    }

    fn new_handle(&mut self, open: Open) -> Result<String, StatusCode> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure);
        }
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    fn finish(&mut self, u: Upload) {
        let Upload { path, mut capture, size, truncated } = u;
        if truncated {
            capture.mark_truncated();
        }
        self.em.emit_capture(capture, &path);
        if self.written.len() < MAX_EVENTS {
            self.written.push((path, size));
        }
    }
}

fn ok(id: u32) -> Status {
    Status { id, status_code: StatusCode::Ok, error_message: "Success".into(), language_tag: "en-US".into() }
}

fn dir_attrs() -> FileAttributes {
    FileAttributes {
        size: Some(4096),
        uid: Some(0),
        gid: Some(0),
        permissions: Some(0o40755),
        atime: Some(1_719_717_164),
        mtime: Some(1_719_717_164),
        ..FileAttributes::empty()
    }
}

fn file_attrs(size: u64) -> FileAttributes {
    FileAttributes { size: Some(size), uid: Some(0), gid: Some(0), permissions: Some(0o100644), ..dir_attrs() }
}

impl russh_sftp::server::Handler for SftpTrap {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(&mut self, _version: u32, _extensions: HashMap<String, String>) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        Ok(Name { id, files: vec![File::dummy(self.path(&path))] })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let p = self.path(&path);
        if self.is_dir(&p) {
            return Ok(Attrs { id, attrs: dir_attrs() });
        }
        match self.written.iter().rev().find(|(w, _)| *w == p) {
            Some((_, size)) => Ok(Attrs { id, attrs: file_attrs(*size) }),
            None => Err(StatusCode::NoSuchFile),
        }
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        match self.handles.get(&handle) {
            Some(Open::File(u)) => Ok(Attrs { id, attrs: file_attrs(u.size) }),
            Some(Open::Dir { .. }) => Ok(Attrs { id, attrs: dir_attrs() }),
            None => Err(StatusCode::Failure),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.path(&filename);
        let writes = pflags.intersects(OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::APPEND | OpenFlags::TRUNCATE);
        if !writes {
            // Downloads always fail.
            self.record("get", &path);
            return Err(StatusCode::NoSuchFile);
        }
        self.record("put", &path);
        if self.is_dir(&path) {
            return Err(StatusCode::Failure);
        }
        if self.uploads.fetch_add(1, Ordering::Relaxed) >= self.max_uploads {
            self.uploads.fetch_sub(1, Ordering::Relaxed);
            // The client is refused (it sees the error); the event says why nothing was kept.
            super::server::upload_not_kept(&self.em, "sftp", &path, 0);
            return Err(StatusCode::PermissionDenied);
        }
        let capture = self.em.capture("sftp");
        let handle = self.new_handle(Open::File(Upload { path, capture, size: 0, truncated: false }));
        if handle.is_err() {
            self.uploads.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(Handle { id, handle: handle? })
    }

    async fn write(&mut self, id: u32, handle: String, offset: u64, data: Vec<u8>) -> Result<Status, Self::Error> {
        let max_file = self.max_file;
        let Some(Open::File(u)) = self.handles.get_mut(&handle) else { return Err(StatusCode::Failure) };
        if offset > u.size && offset <= max_file {
            // A hole: zeros, as a file system would read it back.
            let zeros = [0u8; 4096];
            while u.size < offset {
                let n = ((offset - u.size) as usize).min(zeros.len());
                u.capture.update(&zeros[..n]);
                u.size += n as u64;
            }
        }
        if offset == u.size {
            u.capture.update(&data);
            u.size += data.len() as u64;
        } else {
            u.truncated = true;
        }
        Ok(ok(id))
    }

    async fn read(&mut self, _id: u32, _handle: String, _offset: u64, _len: u32) -> Result<Data, Self::Error> {
        Err(StatusCode::PermissionDenied)
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::File(u)) => self.finish(u),
            Some(Open::Dir { .. }) => {}
            None => return Err(StatusCode::Failure),
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = self.path(&path);
        if !self.is_dir(&path) {
            return Err(StatusCode::NoSuchFile);
        }
        Ok(Handle { id, handle: self.new_handle(Open::Dir { path, listed: false })? })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let Some(Open::Dir { path, listed }) = self.handles.get_mut(&handle) else { return Err(StatusCode::Failure) };
        if *listed {
            return Err(StatusCode::Eof);
        }
        *listed = true;
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        let mut files = vec![File::new(".", dir_attrs()), File::new("..", dir_attrs())];
        for (w, size) in &self.written {
            if let Some(name) = w.strip_prefix(prefix.as_str()).filter(|n| !n.contains('/')) {
                files.push(File::new(name, file_attrs(*size)));
            }
        }
        Ok(Name { id, files })
    }

    async fn setstat(&mut self, id: u32, _path: String, _attrs: FileAttributes) -> Result<Status, Self::Error> {
        Ok(ok(id))
    }

    async fn fsetstat(&mut self, id: u32, _handle: String, _attrs: FileAttributes) -> Result<Status, Self::Error> {
        Ok(ok(id))
    }

    async fn mkdir(&mut self, id: u32, path: String, _attrs: FileAttributes) -> Result<Status, Self::Error> {
        let p = self.path(&path);
        self.record("mkdir", &p);
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let p = self.path(&path);
        self.record("rmdir", &p);
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let p = self.path(&filename);
        self.record("rm", &p);
        Ok(ok(id))
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Result<Status, Self::Error> {
        let (a, b) = (self.path(&oldpath), self.path(&newpath));
        self.record("rename", &format!("{a} {b}"));
        Ok(ok(id))
    }

    async fn symlink(&mut self, _id: u32, linkpath: String, targetpath: String) -> Result<Status, Self::Error> {
        let (a, b) = (self.path(&linkpath), self.path(&targetpath));
        self.record("symlink", &format!("{a} {b}"));
        Err(StatusCode::PermissionDenied)
    }
}

impl Drop for SftpTrap {
    /// The connection ended with files still open: each is kept as far as it arrived, marked
    /// truncated.
    fn drop(&mut self) {
        let open: Vec<Open> = self.handles.drain().map(|(_, o)| o).collect();
        for o in open {
            if let Open::File(mut u) = o {
                u.truncated = true;
                self.finish(u);
            }
        }
    }
}

/// A stream that reads as end-of-file after any I/O error, so russh-sftp's loop (which retries
/// on errors other than end-of-file) always ends when the channel breaks.
pub(super) struct Fuse<S> {
    pub inner: S,
    pub broken: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Fuse<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.broken {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(_)) => {
                self.broken = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Fuse<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.broken {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Err(_)) = r {
            self.broken = true;
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
