//! The NATS side of `benches/load.sh`'s NATS scenarios, with the official client:
//!
//!   nats_bench stream NAME SUBJECT   make (or empty) the JetStream stream NAME over SUBJECT
//!   nats_bench count NAME            print how many messages stream NAME holds
//!   nats_bench echo SUBJECT          answer every request on SUBJECT (queue group `workers`)
//!                                    with an empty 200 until killed (prints `ready` once
//!                                    subscribed)
//!
//! The server is `NATS_URL` (default 127.0.0.1:4222).

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".into());
    let client = async_nats::connect(url).await?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["stream", name, subject] => {
            let context = jetstream::new(client);
            let _ = context.delete_stream(name).await;
            context
                .create_stream(stream::Config {
                    name: name.into(),
                    subjects: vec![subject.into()],
                    ..Default::default()
                })
                .await?;
        }
        ["count", name] => {
            let mut stream = jetstream::new(client).get_stream(name).await?;
            println!("{}", stream.info().await?.state.messages);
        }
        ["echo", subject] => {
            let mut requests = client
                .queue_subscribe(subject.to_owned(), "workers".into())
                .await?;
            client.flush().await?;
            println!("ready");
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    client.publish(reply, bytes::Bytes::new()).await?;
                }
            }
        }
        _ => {
            return Err("usage: nats_bench stream NAME SUBJECT | count NAME | echo SUBJECT".into())
        }
    }
    Ok(())
}
