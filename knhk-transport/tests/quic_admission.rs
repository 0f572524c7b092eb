//! Admission over real QUIC on loopback: a node with a valid membership certificate (or
//! on the allow-list) joins a seed that has never heard of it, is registered at the
//! address it came from and can be answered; a node without one is refused with a typed
//! reason and counted; a certificate stops admitting its holder when it expires.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use knhk_transport::{
    AllowList, InboundPolicy, PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport,
    TransportError,
};
use knhk_types::{
    AdmissionRule, AgentId, HierarchyLevel, MembershipCertificate, MembershipClaims, PeerInfo,
    RefusalReason, Region, UnixMillis,
};

const CLUSTER: &str = "prod";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn id(key: &SigningKey) -> AgentId {
    AgentId::from_verifying_key(&key.verifying_key())
}

fn node(seed: u8, config: QuicConfig) -> QuicTransport {
    let key = key(seed);
    let registry = Arc::new(PeerRegistry::new(id(&key), RegistryConfig::default()));
    QuicTransport::bind(&key, registry, config).unwrap()
}

fn now() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now())
}

/// A certificate for `agent` signed by `authority`, valid for `lifetime` from now.
fn certificate(
    authority: &SigningKey,
    agent: AgentId,
    lifetime: Duration,
) -> MembershipCertificate {
    let claims = MembershipClaims {
        cluster: CLUSTER.into(),
        agent,
        region: Region::new("eu-west").unwrap(),
        role: HierarchyLevel::Aggregator,
        not_before: UnixMillis(now().0 - 60_000),
        expires: now().saturating_add(lifetime),
    };
    MembershipCertificate::issue(authority, claims).unwrap()
}

fn certified_seed(authority: &SigningKey, skew: Duration) -> QuicTransport {
    let mut rule = AdmissionRule::new(id(authority), CLUSTER);
    rule.max_clock_skew = skew;
    node(
        1,
        QuicConfig {
            inbound_policy: InboundPolicy::Certified(Arc::new(rule)),
            ..QuicConfig::default()
        },
    )
}

fn joiner(
    seed: u8,
    credentials: Option<MembershipCertificate>,
    to: &QuicTransport,
) -> QuicTransport {
    let joiner = node(
        seed,
        QuicConfig {
            credentials,
            ..QuicConfig::default()
        },
    );
    joiner
        .registry()
        .register(PeerInfo::new(to.local_id(), to.local_addr().unwrap()))
        .unwrap();
    joiner
}

async fn refusal(from: &QuicTransport, to: &QuicTransport) -> RefusalReason {
    match from
        .send(to.local_id(), Bytes::from_static(b"hello?"))
        .await
    {
        Err(TransportError::AdmissionRefused { peer, reason }) => {
            assert_eq!(peer, to.local_id());
            reason
        }
        other => panic!("expected AdmissionRefused, got {other:?}"),
    }
}

/// Polls `condition` for up to 10 s (a liveness wait, not a timing assertion).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_stranger_joins_and_is_answered_and_one_without_is_refused() {
    let authority = key(100);
    let seed = certified_seed(&authority, Duration::from_secs(30));
    let member_key = key(2);
    let member = joiner(
        2,
        Some(certificate(
            &authority,
            id(&member_key),
            Duration::from_secs(3_600),
        )),
        &seed,
    );
    assert!(!seed.registry().contains(&member.local_id()));
    member
        .send(seed.local_id(), Bytes::from_static(b"let me in"))
        .await
        .unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), seed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inbound.from, member.local_id());
    // Registered at the address it came from, with the certificate's region and role:
    // the seed can answer a node it had never heard of.
    let learned = seed.registry().lookup(&member.local_id()).unwrap();
    assert_eq!(learned.addr, member.local_addr().unwrap());
    assert_eq!(learned.region.as_str(), "eu-west");
    assert_eq!(learned.level, HierarchyLevel::Aggregator);
    seed.send(member.local_id(), Bytes::from_static(b"welcome aboard"))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), member.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&answer.frame[..], b"welcome aboard");
    assert_eq!(seed.stats().peers_admitted, 1);

    // No certificate; a certificate from another authority; someone else's certificate;
    // an expired one: each refused with its reason, never registered, each counted.
    let stranger = joiner(3, None, &seed);
    assert_eq!(
        refusal(&stranger, &seed).await,
        RefusalReason::NoCertificate
    );
    let forger = joiner(
        4,
        Some(certificate(
            &key(101),
            id(&key(4)),
            Duration::from_secs(3_600),
        )),
        &seed,
    );
    assert_eq!(
        refusal(&forger, &seed).await,
        RefusalReason::UnknownAuthority
    );
    let thief = joiner(
        5,
        Some(certificate(
            &authority,
            id(&member_key),
            Duration::from_secs(3_600),
        )),
        &seed,
    );
    assert_eq!(refusal(&thief, &seed).await, RefusalReason::WrongAgent);
    let mut stale = certificate(&authority, id(&key(6)), Duration::from_secs(1));
    stale.claims.expires = UnixMillis(now().0 - 120_000);
    stale.claims.not_before = UnixMillis(now().0 - 240_000);
    let stale = MembershipCertificate::issue(&authority, stale.claims).unwrap();
    let late = joiner(6, Some(stale), &seed);
    assert_eq!(refusal(&late, &seed).await, RefusalReason::Expired);
    let stats = seed.stats();
    for reason in [
        RefusalReason::NoCertificate,
        RefusalReason::UnknownAuthority,
        RefusalReason::WrongAgent,
        RefusalReason::Expired,
    ] {
        assert_eq!(stats.admissions_refused.get(reason), 1, "{reason}");
    }
    assert_eq!(stats.admissions_refused.total(), 4);
    for refused in [&stranger, &forger, &thief, &late] {
        assert!(!seed.registry().contains(&refused.local_id()));
    }
    assert_eq!(seed.stats().peers_admitted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_certificate_is_revoked_by_its_expiry() {
    let authority = key(100);
    let seed = certified_seed(&authority, Duration::ZERO);
    let member = joiner(
        2,
        Some(certificate(
            &authority,
            id(&key(2)),
            Duration::from_millis(1_500),
        )),
        &seed,
    );
    member
        .send(seed.local_id(), Bytes::from_static(b"briefly"))
        .await
        .unwrap();
    assert!(seed.registry().contains(&member.local_id()));
    // Once it expires the connection is closed and the peer deregistered; its next dial
    // with the same certificate is refused.
    eventually("deregistered at expiry", || {
        !seed.registry().contains(&member.local_id())
    })
    .await;
    eventually("connection closed at expiry", || {
        member.pooled_connections() == 0
    })
    .await;
    assert_eq!(refusal(&member, &seed).await, RefusalReason::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_admits_listed_keys_and_refuses_the_rest() {
    let list = Arc::new(AllowList::new([id(&key(2))]));
    let seed = node(
        1,
        QuicConfig {
            inbound_policy: InboundPolicy::AllowList(list.clone()),
            ..QuicConfig::default()
        },
    );
    let listed = joiner(2, None, &seed);
    listed
        .send(seed.local_id(), Bytes::from_static(b"listed"))
        .await
        .unwrap();
    assert_eq!(
        seed.registry().lookup(&listed.local_id()).unwrap().addr,
        listed.local_addr().unwrap()
    );
    let unlisted = joiner(3, None, &seed);
    assert_eq!(refusal(&unlisted, &seed).await, RefusalReason::NotListed);
    // Refused, it leaves the seed alone for a while: its next sends meet the same
    // refusal at once, without a handshake the seed would count.
    for _ in 0..5 {
        assert_eq!(refusal(&unlisted, &seed).await, RefusalReason::NotListed);
    }
    assert_eq!(
        seed.stats()
            .admissions_refused
            .get(RefusalReason::NotListed),
        1
    );
    // Listing it at run time lets its next dial in (once its wait, 500 ms, is over);
    // revoking a key refuses the next connection of a key the registry does not hold.
    assert!(list.allow(unlisted.local_id()));
    let mut tries = 0;
    while let Err(error) = unlisted
        .send(seed.local_id(), Bytes::from_static(b"now listed"))
        .await
    {
        assert!(
            matches!(error, TransportError::AdmissionRefused { .. }),
            "{error:?}"
        );
        tries += 1;
        assert!(tries < 1_000, "not let in within 10 s of being listed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!list.revoke(&id(&key(4))));
    let late = joiner(4, None, &seed);
    assert_eq!(refusal(&late, &seed).await, RefusalReason::NotListed);
    assert_eq!(
        seed.stats()
            .admissions_refused
            .get(RefusalReason::NotListed),
        2
    );
    assert_eq!(seed.stats().peers_admitted, 2);
}
