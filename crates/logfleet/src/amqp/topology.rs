//! Every exchange and queue of the fleet, named from one prefix, and their declaration.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use super::{AmqpError, look_at_queue};
use crate::config::AmqpSettings;

/// Names of every exchange and queue, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub logs_exchange: String,
    pub partition_queues: Vec<String>,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub archive_exchange: String,
    pub archive_queue: String,
    pub archive_dead_letter_exchange: String,
    pub archive_dead_letter_queue: String,
    /// Every live ingest-worker consumes from it (it never holds a message): its consumer count
    /// is the number of live workers, from which each takes its fair share of the partitions.
    pub workers_queue: String,
    /// `x-delivery-limit` of the quorum queues.
    pub delivery_limit: u32,
    /// `classic` or `quorum` (see `amqp.partition_queue_type`).
    pub partition_queue_type: String,
}

impl Topology {
    pub fn new(s: &AmqpSettings) -> Self {
        let p = &s.prefix;
        Self {
            logs_exchange: format!("{p}.logs"),
            partition_queues: (0..s.partitions)
                .map(|i| format!("{p}.logs.p{i}"))
                .collect(),
            dead_letter_exchange: format!("{p}.logs.dlx"),
            dead_letter_queue: format!("{p}.logs.dlq"),
            archive_exchange: format!("{p}.archive"),
            archive_queue: format!("{p}.archive.events"),
            archive_dead_letter_exchange: format!("{p}.archive.dlx"),
            archive_dead_letter_queue: format!("{p}.archive.dlq"),
            workers_queue: format!("{p}.ingest.workers"),
            delivery_limit: s.delivery_limit,
            partition_queue_type: s.partition_queue_type.clone(),
        }
    }

    /// Declares everything, idempotently. Safe to run from every worker at every start.
    pub async fn declare(&self, conn: &Connection) -> Result<(), AmqpError> {
        let ch = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        if let Err(e) = ch
            .exchange_declare(
                self.logs_exchange.as_str().into(),
                ExchangeKind::Custom(super::LOGS_EXCHANGE_TYPE.into()),
                durable,
                FieldTable::default(),
            )
            .await
        {
            tracing::error!(error = %e, exchange = %self.logs_exchange, "declaring the logs exchange failed");
            return Err(if super::is_precondition_failed(&e) {
                AmqpError::LogsExchangeType {
                    exchange: self.logs_exchange.clone(),
                    detail: e.to_string(),
                }
            } else if super::is_command_invalid(&e) {
                AmqpError::MissingPlugin(self.logs_exchange.clone())
            } else {
                AmqpError::Lapin(e)
            });
        }
        for (ex, q) in [
            (&self.dead_letter_exchange, &self.dead_letter_queue),
            (
                &self.archive_dead_letter_exchange,
                &self.archive_dead_letter_queue,
            ),
        ] {
            ch.exchange_declare(
                ex.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::durable(),
                quorum_args(None, None),
            )
            .await?;
            ch.queue_bind(
                q.as_str().into(),
                ex.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        for q in &self.partition_queues {
            let args = if self.partition_queue_type == "quorum" {
                quorum_args(Some(&self.dead_letter_exchange), Some(self.delivery_limit))
            } else {
                classic_partition_args(&self.dead_letter_exchange)
            };
            ch.queue_declare(q.as_str().into(), QueueDeclareOptions::durable(), args)
                .await?;
            // The modulus-hash exchange ignores binding keys: every bound queue is one bucket.
            // Nothing else may be bound to it, or every episode's partition shifts.
            ch.queue_bind(
                q.as_str().into(),
                self.logs_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        ch.exchange_declare(
            self.archive_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        let args = quorum_args(
            Some(&self.archive_dead_letter_exchange),
            Some(self.delivery_limit),
        );
        ch.queue_declare(
            self.archive_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
        ch.queue_bind(
            self.archive_queue.as_str().into(),
            self.archive_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        // Holds no message (anything published to it is dropped at once).
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
        ch.queue_declare(
            self.workers_queue.as_str().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
        ch.close(200, "declared".into()).await?;
        Ok(())
    }

    /// Counts this worker among the live ones: a consumer on the workers queue, for as long as
    /// the returned consumer is kept (lapin cancels a dropped one) and its connection lives.
    pub async fn announce_worker(
        &self,
        conn: &Connection,
        tag: &str,
    ) -> Result<(Channel, lapin::Consumer), AmqpError> {
        use lapin::options::BasicConsumeOptions;
        let ch = conn.create_channel().await?;
        let consumer = ch
            .basic_consume(
                self.workers_queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// Live ingest-workers: consumers on the workers queue (the broker drops a dead worker's at
    /// once when its connection closes, or when heartbeats stop).
    pub async fn live_workers(&self, ch: &Channel) -> Result<u32, AmqpError> {
        Ok(look_at_queue(ch, &self.workers_queue)
            .await?
            .consumer_count())
    }
}

/// Arguments of a quorum queue; dead-lettering is at-least-once so nothing is lost on the way.
fn quorum_args(dlx: Option<&str>, delivery_limit: Option<u32>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dlx) = dlx {
        t.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.into()),
        );
        t.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        t.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }
    if let Some(limit) = delivery_limit {
        t.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(limit.min(i32::MAX as u32) as i32),
        );
    }
    t
}

/// Arguments of a classic partition queue: a dead-letter exchange. One owner at a time comes
/// from exclusive consumption (see `crate::ingest::partition`), not from `x-single-active-consumer`,
/// whose classic-queue code path crashes the queue process in RabbitMQ 3.10 (seen in tests).
fn classic_partition_args(dlx: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    t.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.into()),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let s = crate::config::Settings::load_from(None).unwrap();
        let t = Topology::new(&s.amqp);
        assert_eq!(t.logs_exchange, "logfleet.logs");
        assert_eq!(t.dead_letter_queue, "logfleet.logs.dlq");
        assert_eq!(t.partition_queues.len(), 8);
        assert_eq!(t.partition_queues[7], "logfleet.logs.p7");
    }
}
