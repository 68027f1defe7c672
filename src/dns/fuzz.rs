//! The entry point of the `dns_request` fuzz target: arbitrary bytes
//! through the whole request path of the handler, as a UDP and as a TCP
//! message, with the devnet registry zone and a local zone loaded and no
//! upstreams.

use std::sync::{Arc, OnceLock};

use hickory_server::net::xfer::Protocol;

use crate::admin::Metrics;
use crate::config::{Config, RegistryConfig, RegistryRole};
use crate::dns::handler::DnsHandler;
use crate::dns::registry::RegistryZone;
use crate::dns::{forward, listen, zones};
use crate::registry::model::Zone;
use crate::registry::service::Registry;

const FUZZ_ZONE: &str = "@ 3600 IN SOA ns.fuzz.test. admin.fuzz.test. 1 7200 3600 1209600 300
@ 3600 IN NS ns
ns 3600 IN A 127.0.0.1
www 300 IN A 10.0.0.1
alias 300 IN CNAME www
*.wild 300 IN TXT \"wildcard\"
";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    handler: DnsHandler,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!("gridedge-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("fuzz.test.zone"), FUZZ_ZONE).expect("zone");
        let loaded = zones::load_dir(&dir);
        let mut config = Config::default().dns;
        config.forward.upstreams.clear();
        let forwarder = forward::Forwarder::new(&config.forward).expect("no upstreams");
        let metrics = Arc::new(Metrics::new());
        let registry_config = RegistryConfig {
            zone: Zone::parse("grid.").expect("zone"),
            genesis: None,
            dir: dir.join("registry"),
            role: RegistryRole::Sequencer { key_file: None },
            soa_ttl_secs: 60,
        };
        let registry = Registry::open(&registry_config, metrics.clone()).expect("registry");
        let registry = RegistryZone::new(Arc::new(registry), vec!["127.0.0.1".parse().unwrap()]);
        let handler = DnsHandler::new(
            &config,
            Some(registry),
            loaded.catalog,
            loaded.origins,
            forwarder,
            metrics,
        );
        Fixture { runtime, handler }
    })
}

/// Feeds `data` to the handler as a UDP and as a TCP query from loopback.
/// Any panic is a bug; every answer must itself parse as a DNS message.
pub fn handle_request_bytes(data: &[u8]) {
    let f = fixture();
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let src = "127.0.0.1:5353".parse().expect("addr");
        let out = f
            .runtime
            .block_on(listen::answer(&f.handler, data.to_vec(), src, protocol));
        if let Some(out) = out {
            hickory_proto::op::Message::from_vec(&out).expect("our answer parses");
            if protocol == Protocol::Udp {
                assert!(out.len() <= usize::from(f.handler.edns_payload()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_edge_cases_do_not_panic() {
        handle_request_bytes(&[]);
        handle_request_bytes(&[0; 11]);
        handle_request_bytes(&[0xff; 12]);
        handle_request_bytes(&[0; 512]);
        // A query for www.fuzz.test A, then every truncation of it.
        let q =
            hex::decode("abcd01000001000000000000037777770466757a7a04746573740000010001").unwrap();
        for n in 0..=q.len() {
            handle_request_bytes(&q[..n]);
        }
    }
}

#[cfg(test)]
mod formerr_tests {
    use super::*;

    #[test]
    fn malformed_body_gets_formerr() {
        let f = fixture();
        let mut bad = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(&[0x3f, b'x']);
        let src = "127.0.0.1:5353".parse().unwrap();
        let out = f
            .runtime
            .block_on(listen::answer(&f.handler, bad, src, Protocol::Udp))
            .expect("an answer");
        assert_eq!(&out[..2], &[0x12, 0x34]);
        assert_eq!(out[3] & 0x0f, 1, "FORMERR");
    }
}
