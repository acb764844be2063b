//! One sync: the WAL frames committed since the last become one level-0 LTX file, holding the
//! writer at the barrier for the tail when it wants to truncate; or, when the replica cannot
//! know which frames it lacks, the whole database as one file.

use std::time::{Duration, Instant};

use super::{now_ms, ShipError, Shipper};
use crate::replicate::image::{self, Uploads};
use crate::replicate::ltx::{self, Encoder, Header};
use crate::replicate::replica::SNAPSHOT_LEVEL;
use crate::replicate::status::ImageReport;
use crate::replicate::wal::{self, WAL_HEADER_SIZE};

/// How long a sync waits for the writer to reach a commit boundary and hold.
const BARRIER_WAIT: Duration = Duration::from_millis(100);

impl Shipper {
    pub(super) fn ship_image(&mut self) -> Result<bool, ShipError> {
        let _reading = self.gate.reading_image();
        self.read_and_ship_image()
    }

    pub(super) fn read_and_ship_image(&mut self) -> Result<bool, ShipError> {
        let epoch = self.gate.epoch();
        if epoch % 2 == 1 {
            // A checkpoint is copying pages into the file right now.
            return Ok(false);
        }
        let started = Instant::now();
        let rss_before = image::rss_bytes();
        let Some(scan) = image::scan(&self.files)? else {
            return Ok(false);
        };
        let first = self.txid == 0;
        let txid = self.txid + 1;
        let header = Header {
            page_size: scan.page_size,
            commit: scan.commit,
            min_txid: if first { 1 } else { txid },
            max_txid: txid,
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        header.validate()?;
        let mut uploads = Uploads {
            uploads: Vec::new(),
        };
        let levels: &[u32] = if first { &[SNAPSHOT_LEVEL, 0] } else { &[0] };
        for level in levels {
            match self.replica.create(*level, &header) {
                Ok(upload) => uploads.uploads.push(upload),
                Err(err) => {
                    uploads.abort();
                    return Err(err.into());
                }
            }
        }
        let mut encoder = Encoder::new(&header, uploads)?;
        let gate = self.gate.clone();
        let written =
            image::write_pages(&self.files, &scan, &mut encoder, &|| gate.epoch() == epoch)
                .and_then(|complete| {
                    if complete {
                        encoder.finish()?;
                    }
                    Ok(complete)
                });
        let pages = encoder.pages();
        let uploads = encoder.into_inner();
        match written {
            Ok(true) if self.gate.epoch() == epoch => {}
            Ok(_) => {
                // A checkpoint began or ended while we read: the file may mix two states.
                uploads.abort();
                return Ok(false);
            }
            Err(err) => {
                uploads.abort();
                return Err(err);
            }
        }
        let files = uploads.finish()?;
        let bytes = files.last().map_or(0, |f| f.size);
        for file in files {
            self.status.uploaded(file.size);
            if let Some(listed) = &mut self.listed {
                listed.push(file);
            }
        }
        self.txid = txid;
        self.cursor = scan.cursor();
        self.cursor_epoch = epoch;
        self.gate.shipped(epoch, self.offset());
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            txid,
            pages,
            bytes,
            seconds,
            reason = self.image_reason,
            "shipped the whole database"
        );
        self.status.image_shipped(ImageReport {
            txid: format!("{txid:016x}"),
            pages,
            bytes,
            seconds,
            rss_before_bytes: rss_before,
            reason: self.image_reason,
        });
        self.report_synced();
        Ok(true)
    }

    pub(super) fn offset(&self) -> u64 {
        self.cursor.map_or(WAL_HEADER_SIZE, |c| c.end)
    }

    /// True if the WAL generation changed (or the WAL emptied) since the cursor was taken
    /// without the writer truncating it: another process checkpointed and restarted it, so
    /// frames the replica lacks may be gone from the WAL (they are in the database file).
    pub(super) fn restarted_by_another_process(
        &self,
        epoch: u64,
        writer_may_restart: bool,
    ) -> bool {
        self.cursor.is_some_and(|c| c.end > WAL_HEADER_SIZE)
            && epoch == self.cursor_epoch
            && !writer_may_restart
    }

    /// Ships what was committed since the last sync; returns whether a file was written.
    pub fn try_sync(&mut self) -> Result<bool, ShipError> {
        let started = Instant::now();
        self.interrupted = false;
        let (epoch, writer_may_restart) = self.gate.generation();
        let wal = self.files.wal();
        let read = match &self.cursor {
            Some(cursor) => wal::read_after(wal, cursor)?,
            None => wal::read_committed(wal, WAL_HEADER_SIZE)?,
        };
        let new_generation = read
            .as_ref()
            .is_none_or(|s| self.cursor.map(|c| c.salts) != Some(s.cursor.salts));
        if new_generation && self.restarted_by_another_process(epoch, writer_may_restart) {
            tracing::warn!(
                "another process checkpointed and restarted the WAL before the replica had all of                  it; shipping the whole database"
            );
            self.want_image("another process restarted the WAL");
            let shipped = self.ship_image()?;
            self.image_pending = !shipped;
            return Ok(shipped);
        }
        let Some(mut segment) = read else {
            // No WAL (or an empty one after a truncating checkpoint): start over at its top.
            self.cursor = None;
            self.cursor_epoch = epoch;
            self.report_synced();
            return Ok(false);
        };
        if new_generation && self.gate.take_image_wanted() {
            // The writer had to pass unshipped frames: the whole database goes next.
            self.want_image("the writer folded away frames the replica lacked");
            let shipped = self.ship_image()?;
            self.image_pending = !shipped;
            return Ok(shipped);
        }
        // When the writer wants to truncate: with most of the WAL read, the writer holds at its
        // next commit while the tail is read, so this one file holds everything and the writer
        // can truncate (the WAL stays within one interval of growth, the hold stays short).
        // Raised until this function returns, whichever way: the report below must reach a
        // writer that is still holding.
        let barrier = if self.gate.truncate_wanted() {
            self.gate.raise_barrier(BARRIER_WAIT)
        } else {
            None
        };
        if barrier.is_some() {
            if let Some(tail) = wal::read_after(wal, &segment.cursor)? {
                if tail.cursor.salts == segment.cursor.salts {
                    segment.pages.extend(tail.pages);
                    if tail.commit > 0 {
                        segment.commit = tail.commit;
                    }
                    segment.end = tail.end;
                    segment.cursor = tail.cursor;
                }
            }
        }
        if segment.pages.is_empty() {
            self.cursor = Some(segment.cursor);
            self.cursor_epoch = epoch;
            self.gate.shipped(epoch, self.offset());
            self.report_synced();
            return Ok(false);
        }
        let txid = self.txid + 1;
        let header = Header {
            page_size: segment.header.page_size,
            commit: segment.commit,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: now_ms(),
            ..Header::default()
        };
        let lock = ltx::lock_page(segment.header.page_size);
        let mut upload = self.replica.create(0, &header)?;
        let encoded = (|| {
            let mut encoder = Encoder::new(&header, &mut *upload)?;
            let mut buf = Vec::new();
            for (pgno, at) in &segment.pages {
                if *pgno > segment.commit || *pgno == lock {
                    continue;
                }
                let page = segment.page(wal, *pgno, *at, &mut buf)?;
                encoder.page(*pgno, page)?;
            }
            encoder.finish()?;
            Ok::<_, ShipError>(encoder.pages())
        })();
        let pages = match encoded {
            Ok(pages) => pages,
            Err(ShipError::Wal(wal::WalError::Restarted)) => {
                // Read again from the cursor next round, in whatever generation the WAL is.
                upload.abort();
                tracing::debug!("the WAL was restarted while a sync read it; reading it again");
                self.interrupted = true;
                return Ok(false);
            }
            Err(err) => {
                upload.abort();
                return Err(err);
            }
        };
        let encoded = started.elapsed();
        let written = upload.finish()?;
        self.status.uploaded(written.size);
        if let Some(listed) = &mut self.listed {
            listed.push(written);
        }
        tracing::debug!(
            txid,
            pages,
            wal_bytes = segment.end - segment.start,
            encode_ms = encoded.as_millis() as u64,
            write_ms = (started.elapsed() - encoded).as_millis() as u64,
            "synced"
        );
        metrics::histogram!("dropd_replica_sync_seconds").record(started.elapsed().as_secs_f64());
        self.txid = txid;
        self.cursor = Some(segment.cursor);
        self.cursor_epoch = epoch;
        self.gate.shipped(epoch, self.offset());
        self.report_synced();
        Ok(true)
    }

    pub(super) fn pending_wal_bytes(&self) -> u64 {
        self.files.wal_len().saturating_sub(self.offset())
    }

    pub(super) fn report_synced(&self) {
        self.status.synced(self.txid, self.pending_wal_bytes());
    }

    /// After the last round, with the writer stopped: true if the replica holds everything the
    /// database and its WAL hold.
    pub(super) fn everything_shipped(&self) -> bool {
        let wal_len = self.files.wal_len();
        !self.image_pending
            && !self.interrupted
            && self.txid > 0
            && (wal_len == 0 || self.cursor.is_some_and(|c| c.end == wal_len))
    }
}
