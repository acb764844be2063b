//! What handlers ask of the writer. Each command carries its own reply channel; the writer answers
//! only after the transaction holding the command's effect has committed.

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::domain::views::{DropPatch, DropView, HoldView, NewDrop, OrderView};
use crate::domain::{BuyerId, DropId, HoldId, Refusal};

use super::audit::{self, json, Acted, Acting, Entry};
use super::batch::Batch;
use super::cost::{self, Cost};
use super::draw::{self, EnterDraw};
use super::requests::{Answer, ConfirmHold, IdempotentRequest, PlaceHold, ReceiptPart};
use super::tx::{chore, decided};
use super::waitlist::{self, JoinWaitlist};
use super::webhooks::{self, WebhookAnswer, WebhookChange};
use super::{admin_acts, admin_keys, checkout, expiry, holds, idempotency, StoreError};
use crate::domain::access_codes::{CreatedCodes, NewCodes};
use crate::domain::draw::DrawEntry;
use crate::domain::ledger::Event;
use crate::domain::waitlist::WaitlistEntry;

/// Where a command's answer goes, and the answer while the batch has not committed yet.
/// What the writer sends back: the answer, and what the command cost the database (charged
/// to the request that asked).
pub(crate) type Answered<T> = (Result<T, StoreError>, Cost);

pub(crate) struct Reply<T> {
    tx: oneshot::Sender<Answered<T>>,
    result: Option<Result<T, StoreError>>,
    cost: Cost,
}

impl<T> Reply<T> {
    pub(crate) fn new(tx: oneshot::Sender<Answered<T>>) -> Self {
        Self {
            tx,
            result: None,
            cost: Cost::default(),
        }
    }

    /// Keeps the answer, and the cost of the command since it started.
    fn hold(&mut self, result: Result<T, StoreError>) {
        self.result = Some(result);
        self.cost = cost::since_start();
    }

    /// Sends the held answer, or `failure` if the batch did not commit.
    fn send(self, failure: Option<StoreError>) {
        let result = match failure {
            Some(err) => Err(err),
            None => self.result.unwrap_or(Err(StoreError::CommitFailed)),
        };
        // The asker may have gone (client disconnected); the effect stands regardless.
        let _ = self.tx.send((result, self.cost));
    }
}

pub(crate) enum Command {
    PlaceHold(IdempotentRequest, PlaceHold, Reply<Answer<HoldView>>),
    ConfirmHold(IdempotentRequest, ConfirmHold, Reply<Answer<OrderView>>),
    ReleaseHold {
        buyer: BuyerId,
        hold_id: HoldId,
        reply: Reply<Result<HoldView, Refusal>>,
    },
    /// The buyer asks to pay: the payment service hears of it through the outbox.
    RequestCheckout {
        buyer: BuyerId,
        hold_id: HoldId,
        reply: Reply<Result<HoldView, Refusal>>,
    },
    /// A buyer joins a queue drop's queue (once; again answers their place).
    JoinQueue {
        buyer: BuyerId,
        drop_id: DropId,
        reply: Reply<Result<super::queue::QueueEntry, Refusal>>,
    },
    /// A buyer waits for a sold-out SKU (once; again answers their entry).
    JoinWaitlist {
        buyer: BuyerId,
        cmd: JoinWaitlist,
        reply: Reply<Result<WaitlistEntry, Refusal>>,
    },
    LeaveWaitlist {
        buyer: BuyerId,
        drop_id: DropId,
        sku: String,
        reply: Reply<Result<WaitlistEntry, Refusal>>,
    },
    EnterDraw {
        buyer: BuyerId,
        cmd: EnterDraw,
        reply: Reply<Result<DrawEntry, Refusal>>,
    },
    CreateDrop {
        act: Acting,
        spec: NewDrop,
        reply: Reply<Result<Acted<DropView>, Refusal>>,
    },
    UpdateDrop {
        act: Acting,
        drop_id: DropId,
        patch: DropPatch,
        /// `If-Match`: the settings revision the operator read.
        if_match: Option<i64>,
        reply: Reply<Result<Acted<DropView>, Refusal>>,
    },
    AdjustStock {
        act: Acting,
        drop_id: DropId,
        sku: String,
        delta: i64,
        reply: Reply<Result<Acted<DropView>, Refusal>>,
    },
    CreateCodes {
        act: Acting,
        drop_id: DropId,
        spec: NewCodes,
        reply: Reply<Result<Acted<CreatedCodes>, Refusal>>,
    },
    CreateAdminKey {
        name: String,
        key_hash: [u8; 32],
        scope: String,
        reply: Reply<String>,
    },
    /// True if the key was active and is revoked now.
    RevokeAdminKey {
        id: String,
        reply: Reply<bool>,
    },
    /// A webhook endpoint changed by the admin API (`act`), or its cursor by the delivery
    /// worker.
    Webhook {
        act: Option<Acting>,
        change: WebhookChange,
        reply: Reply<Result<Acted<WebhookAnswer>, Refusal>>,
    },
    /// Test hook (debug builds): the writer sleeps this long inside its batch.
    #[cfg(debug_assertions)]
    Stall {
        for_: std::time::Duration,
        reply: Reply<()>,
    },
    /// Runs a batch now (expiring due holds); answers once it committed.
    Sync {
        reply: Reply<()>,
    },
    /// Finish what is queued, checkpoint, and stop.
    Shutdown,
}

impl Command {
    /// Runs the command inside the open transaction and holds its answer for after the commit.
    /// `Err` means the database failed on this command: the batch must be rolled back.
    pub(crate) fn execute(
        &mut self,
        conn: &Connection,
        batch: &mut Batch<'_>,
    ) -> Result<(), StoreError> {
        cost::start();
        let now = batch.now;
        // Admin commands change drops through SQL: memory is written out first and forgets the
        // drop after, so neither overwrites the other.
        if let Some(drop_id) = self.changes_drop_through_sql() {
            batch.memory.flush(conn)?;
            batch.memory.forget_drop(&drop_id);
        }
        match self {
            Command::PlaceHold(req, cmd, reply) => {
                // Waiters are owed the SKU's free and due units before anyone attempts.
                chore(expiry::settle(conn, batch, &cmd.drop_id, &cmd.sku))?;
                let drop = Some(cmd.drop_id.as_str());
                batch.last_attempt = None;
                let entry = |result: &Result<HoldView, Refusal>, attempt_seq| Event::Attempt {
                    attempt_seq,
                    buyer: req.buyer.to_string(),
                    sku: cmd.sku.clone(),
                    quantity: cmd.quantity,
                    outcome: outcome_of(result).to_owned(),
                    hold_id: result.as_ref().ok().map(|h| h.hold_id.clone()),
                };
                let mut answer = idempotency::run_once(
                    conn,
                    batch,
                    req,
                    drop,
                    |c, batch| holds::place(c, batch, &req.buyer, cmd),
                    Some(entry),
                )?;
                if let Some((attempt_seq, position)) = batch.last_attempt.take() {
                    answer.receipt = Some(ReceiptPart::Pending {
                        drop_id: cmd.drop_id.clone(),
                        attempt_seq,
                        position,
                        outcome: outcome_of(&answer.result).to_owned(),
                    });
                }
                crate::stats::count_attempt(attempt_outcome(&answer));
                reply.hold(Ok(answer));
            }
            Command::ConfirmHold(req, cmd, reply) => {
                // A payment service's confirmation is audited with the hold as it was.
                let before = match &cmd.service {
                    Some(_) => holds::get(conn, cmd.hold_id.as_str())?,
                    None => None,
                };
                let answer = idempotency::run_once(
                    conn,
                    batch,
                    req,
                    None,
                    |c, batch| holds::confirm(c, batch, &req.buyer, cmd),
                    None::<fn(&Result<OrderView, Refusal>, i64) -> Event>,
                )?;
                if let (
                    Some(act),
                    Answer {
                        result: Ok(order),
                        replayed: false,
                        ..
                    },
                ) = (&cmd.service, &answer)
                {
                    let entry = Entry {
                        action: "hold.confirm",
                        target: cmd.hold_id.to_string(),
                        before: before.as_ref().and_then(json),
                        after: json(order),
                        answer: None,
                    };
                    audit::record(conn, now.timestamp_millis(), act, entry)?;
                }
                reply.hold(Ok(answer));
            }
            Command::ReleaseHold {
                buyer,
                hold_id,
                reply,
            } => {
                reply.hold(Ok(decided(conn, |c| {
                    holds::release(c, batch, buyer, hold_id)
                })?));
            }
            Command::JoinQueue {
                buyer,
                drop_id,
                reply,
            } => {
                reply.hold(Ok(decided(conn, |c| {
                    super::queue::join(c, batch, buyer, drop_id)
                })?));
            }
            Command::JoinWaitlist { buyer, cmd, reply } => {
                reply.hold(Ok(decided(conn, |c| waitlist::join(c, batch, buyer, cmd))?));
            }
            Command::LeaveWaitlist {
                buyer,
                drop_id,
                sku,
                reply,
            } => {
                reply.hold(Ok(decided(conn, |c| {
                    waitlist::leave(c, batch, buyer, drop_id, sku)
                })?));
            }
            Command::EnterDraw { buyer, cmd, reply } => {
                reply.hold(Ok(decided(conn, |c| draw::enter(c, batch, buyer, cmd))?));
            }
            Command::RequestCheckout {
                buyer,
                hold_id,
                reply,
            } => {
                reply.hold(Ok(decided(conn, |c| {
                    checkout::request(c, batch, buyer, hold_id)
                })?));
            }
            Command::CreateDrop { act, spec, reply } => {
                reply.hold(Ok(admin_acts::create_drop(conn, batch, act, spec)?));
            }
            Command::UpdateDrop {
                act,
                drop_id,
                patch,
                if_match,
                reply,
            } => {
                let result = admin_acts::update_drop(conn, batch, act, drop_id, patch, *if_match);
                reply.hold(Ok(result?));
            }
            Command::AdjustStock {
                act,
                drop_id,
                sku,
                delta,
                reply,
            } => {
                let result = admin_acts::adjust_stock(conn, batch, act, drop_id, sku, *delta);
                reply.hold(Ok(result?));
            }
            Command::CreateCodes {
                act,
                drop_id,
                spec,
                reply,
            } => {
                let result = admin_acts::create_codes(conn, batch, act, drop_id, spec);
                reply.hold(Ok(result?));
            }
            Command::CreateAdminKey {
                name,
                key_hash,
                scope,
                reply,
            } => {
                reply.hold(Ok(admin_keys::insert(conn, name, key_hash, scope, now)?));
            }
            Command::RevokeAdminKey { id, reply } => {
                reply.hold(Ok(admin_keys::revoke(conn, id, now)?));
            }
            Command::Webhook { act, change, reply } => {
                batch.endpoints_changed |= !matches!(change, WebhookChange::Advance { .. });
                let now_ms = now.timestamp_millis();
                let answer = match act {
                    Some(act) => admin_acts::change_webhook(conn, now_ms, act, change)?,
                    None => Ok(Acted::Done(webhooks::apply(conn, change, now_ms)?)),
                };
                reply.hold(Ok(answer));
            }
            #[cfg(debug_assertions)]
            Command::Stall { for_, reply } => {
                std::thread::sleep(*for_);
                reply.hold(Ok(()));
            }
            Command::Sync { reply } => reply.hold(Ok(())),
            Command::Shutdown => {}
        }
        Ok(())
    }

    /// Answers with what `execute` decided, or with `failure`. True for a shutdown request.
    pub(crate) fn answer(self, failure: Option<StoreError>) -> bool {
        match self {
            Command::PlaceHold(_, _, reply) => reply.send(failure),
            Command::ConfirmHold(_, _, reply) => reply.send(failure),
            Command::ReleaseHold { reply, .. } | Command::RequestCheckout { reply, .. } => {
                reply.send(failure)
            }
            Command::JoinQueue { reply, .. } => reply.send(failure),
            Command::JoinWaitlist { reply, .. } | Command::LeaveWaitlist { reply, .. } => {
                reply.send(failure)
            }
            Command::EnterDraw { reply, .. } => reply.send(failure),
            Command::CreateDrop { reply, .. }
            | Command::UpdateDrop { reply, .. }
            | Command::AdjustStock { reply, .. } => reply.send(failure),
            Command::CreateCodes { reply, .. } => reply.send(failure),
            Command::CreateAdminKey { reply, .. } => reply.send(failure),
            Command::RevokeAdminKey { reply, .. } => reply.send(failure),
            Command::Webhook { reply, .. } => reply.send(failure),
            #[cfg(debug_assertions)]
            Command::Stall { reply, .. } => reply.send(failure),
            Command::Sync { reply } => reply.send(failure),
            Command::Shutdown => return true,
        }
        false
    }

    /// Completes a hold attempt's receipt with what its batch chained and signed.
    pub(crate) fn seal(&mut self, chained: &mut super::ledger::Chained) {
        let Command::PlaceHold(_, _, reply) = self else {
            return;
        };
        let Some(Ok(answer)) = reply.result.as_mut() else {
            return;
        };
        if !matches!(answer.receipt, Some(ReceiptPart::Pending { .. })) {
            return;
        }
        if let Some(ReceiptPart::Pending {
            drop_id,
            attempt_seq,
            position,
            outcome,
        }) = answer.receipt.take()
        {
            answer.receipt = chained
                .take_receipt(&drop_id, attempt_seq, position, outcome)
                .map(|r| ReceiptPart::Fresh(Box::new(r)));
        }
    }

    fn changes_drop_through_sql(&self) -> Option<DropId> {
        match self {
            Command::CreateDrop { spec, .. } => Some(DropId::from_trusted(spec.id.clone())),
            Command::UpdateDrop { drop_id, .. }
            | Command::AdjustStock { drop_id, .. }
            | Command::CreateCodes { drop_id, .. } => Some(drop_id.clone()),
            _ => None,
        }
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        matches!(self, Command::Shutdown)
    }

    /// Whether it may add a drop or move one's `ends_at`.
    pub(crate) fn may_reschedule(&self) -> bool {
        matches!(
            self,
            Command::CreateDrop { .. } | Command::UpdateDrop { .. }
        )
    }
}

fn attempt_outcome(answer: &Answer<HoldView>) -> &'static str {
    match answer {
        Answer { replayed: true, .. } => "replayed",
        Answer { result: Ok(_), .. } => "held",
        Answer {
            result: Err(refusal),
            ..
        } => refusal.code(),
    }
}

fn outcome_of(result: &Result<HoldView, Refusal>) -> &'static str {
    match result {
        Ok(_) => "held",
        Err(refusal) => refusal.code(),
    }
}
