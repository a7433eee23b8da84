//! Jobs that failed for good, kept on disk instead of blocking the queue.
//!
//! A job whose failure is not storage being unavailable (a bug, data storage refuses) would
//! fail again however often it ran, and the in-process queue runs jobs in order: retried
//! forever, it held every later job behind it. After a few attempts such a job is written
//! here (`$STATUSPULSE_DATA_DIR/dead-letters/`, one file per job, synced before the job
//! counts as done, so its audit events are never only in memory) and the queue moves on.
//! Each start hands the files back to the queue once, so that a fix (an upgrade, a repaired
//! database) brings their events into the audit log; a job that fails for good again is
//! written back. A broker's dead-letter exchange will play this part for RabbitMQ.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Job;

/// The files' suffix; anything else in the directory (a `.tmp` left by a crash mid-write)
/// is not a dead letter.
const SUFFIX: &str = ".job.json";

#[derive(Clone)]
pub struct DeadLetters {
    dir: PathBuf,
}

impl DeadLetters {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> io::Result<DeadLetters> {
        crate::private_dir::create(dir)?;
        Ok(DeadLetters {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes a job durably: to a temporary file, synced, renamed into place, and the
    /// directory synced, so that a crash leaves either the whole job or no file.
    pub fn keep(&self, job: &Job) -> io::Result<PathBuf> {
        let name = uuid::Uuid::now_v7().simple().to_string();
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        let bytes = serde_json::to_vec(job).map_err(io::Error::other)?;
        // Readable by this user only, like the spool the events came from.
        crate::private_dir::write_atomically(&path, &bytes)?;
        Ok(path)
    }

    /// Whether `dir` holds a kept job, without opening it (a missing directory holds none).
    pub fn any_in(dir: &Path) -> io::Result<bool> {
        if !dir.exists() {
            return Ok(false);
        }
        for entry in fs::read_dir(dir)? {
            if entry?.file_name().to_string_lossy().ends_with(SUFFIX) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every kept job, oldest first, with its file. A file that does not parse is left where
    /// it is and reported, never deleted.
    pub fn all(&self) -> io::Result<Vec<(PathBuf, Job)>> {
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.to_string_lossy().ends_with(SUFFIX))
            .collect();
        // UUIDv7 names sort by creation.
        paths.sort();
        let mut jobs = Vec::with_capacity(paths.len());
        for path in paths {
            match serde_json::from_slice(&fs::read(&path)?) {
                Ok(job) => jobs.push((path, job)),
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "unreadable dead letter left in place");
                }
            }
        }
        Ok(jobs)
    }

    pub fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::audit::{AuditEvent, CredentialType};
    use crate::domain::audit_codec::EncodedEvents;

    fn event(n: u8) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7(),
            occurred_at: chrono::Utc::now(),
            workspace_id: "ws_1".into(),
            credential_type: CredentialType::ApiKey,
            credential_id: "key_1".into(),
            key_label: Some("ci".into()),
            app_name: None,
            method: "GET".into(),
            path: format!("/v1/checks/{n}"),
            scope: Some("checks:read".into()),
            status: 200,
            error_code: None,
            request_id: format!("req-{n}"),
            client_addr: None,
        }
    }

    #[test]
    fn kept_jobs_come_back_whole_in_order_and_junk_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("sp-dead-{}", uuid::Uuid::now_v7()));
        let letters = DeadLetters::open(&dir).unwrap();
        let jobs: Vec<Job> = (0..3)
            .map(|n| Job::IngestAudit {
                events: Arc::new(EncodedEvents::from_events(&[event(n), event(n + 10)])),
            })
            .collect();
        for job in &jobs {
            letters.keep(job).unwrap();
        }
        fs::write(dir.join(format!("junk{SUFFIX}")), b"{not json").unwrap();
        fs::write(dir.join("half-written.tmp"), b"{").unwrap();
        let kept = letters.all().unwrap();
        assert_eq!(
            kept.iter().map(|(_, job)| job.clone()).collect::<Vec<_>>(),
            jobs
        );
        #[cfg(unix)]
        for (path, _) in &kept {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        letters.remove(&kept[0].0).unwrap();
        assert_eq!(letters.all().unwrap().len(), 2);
        assert!(dir.join(format!("junk{SUFFIX}")).exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
