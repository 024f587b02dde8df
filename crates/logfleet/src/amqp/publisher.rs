//! Publishing with publisher confirms.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::{AmqpError, Topology};
use crate::contract::{ArchiveKind, ArchiveRequest, EpisodeId};

/// A channel in confirm mode: every publish returns only once the broker has the message.
#[derive(Clone, Debug)]
pub struct ConfirmedPublisher {
    channel: Channel,
}

impl ConfirmedPublisher {
    pub async fn open(conn: &Connection) -> Result<Self, AmqpError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    /// Publishes persistently and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), AmqpError> {
        let props = props.with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(AmqpError::Nacked(exchange.to_owned())),
        }
    }

    /// Publishes a JSON body with a message id.
    pub async fn publish_json(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: Option<&str>,
    ) -> Result<(), AmqpError> {
        let mut props = BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        self.publish(exchange, routing_key, body, props).await
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// Publishes an archive request for `ep` (with confirm): the ingest-worker's threshold events,
/// `logctl archive flush`.
pub async fn request_archive(
    publisher: &ConfirmedPublisher,
    topology: &Topology,
    ep: &EpisodeId,
    kind: ArchiveKind,
) -> Result<(), AmqpError> {
    let body = serde_json::to_vec(&ArchiveRequest {
        episode_id: ep.clone(),
        kind,
    })
    .expect("an ArchiveRequest serializes");
    let id = uuid::Uuid::new_v4().to_string();
    publisher
        .publish_json(&topology.archive_exchange, ep.as_str(), &body, Some(&id))
        .await
}
