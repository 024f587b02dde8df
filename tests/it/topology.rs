//! The logs exchange's type is checked where it is declared: one of another type (an earlier
//! logfleet's x-consistent-hash, whose routing can change at a broker restart) is refused with
//! the error that says how to replace it, and the broker's own words.

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use logfleet::amqp::{AmqpError, Topology};
use logfleet_testkit::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logs_exchange_of_another_type_is_refused_with_how_to_replace_it() {
    let env = TestEnv::new("exchange-type", |_| {}).await;
    let mut amqp = env.settings.amqp.clone();
    amqp.prefix = format!("{}.old", env.settings.amqp.prefix);
    let old = Topology::new(&amqp);
    let ch = env.conn.create_channel().await.unwrap();
    ch.exchange_declare(
        old.logs_exchange.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let refused = old.declare(&env.conn).await;
    match &refused {
        Err(AmqpError::LogsExchangeType { exchange, detail }) => {
            assert_eq!(exchange, &old.logs_exchange);
            assert!(
                detail.contains("PRECONDITION"),
                "the broker's words: {detail}"
            );
        }
        other => panic!("expected LogsExchangeType, got {other:?}"),
    }
    let text = refused.unwrap_err().to_string();
    assert!(text.contains("docs/operations.md"), "{text}");
    // Replaced as docs/operations.md says, the declare goes through.
    let ch = env.conn.create_channel().await.unwrap();
    ch.exchange_delete(
        old.logs_exchange.as_str().into(),
        ExchangeDeleteOptions::default(),
    )
    .await
    .unwrap();
    old.declare(&env.conn).await.expect("declared again");
    let mut cleanup = env.settings.clone();
    cleanup.amqp = amqp;
    logfleet_testkit::remove_test_resources(&cleanup).await;
    env.cleanup().await;
}
