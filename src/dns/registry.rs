//! Authoritative answers for a registry zone (`grid.` on the devnet), from
//! the verified registry state.
//!
//! A name (`hello.grid.`) is one label under the zone; everything below it
//! (`www.hello.grid.`) is in its owner's record set. The answer rules are
//! those of an authoritative server (RFC 1034 section 4.3.2): NXDOMAIN with
//! the zone's SOA for a name that is not registered (or expired) and for a
//! subname that holds nothing, NODATA with the SOA for a type a subname
//! lacks, a referral (NS and DS in the authority section, glue for name
//! servers inside the name, AA clear) where the owner delegated, and CNAME
//! chains followed inside the zone. A name that carries content but no
//! address at its apex is answered with this edge's public addresses, so a
//! browser that asks for it reaches the HTTP edge.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::registry::model::{self as reg, NameState, RecordData, Subname};
use crate::registry::service::Registry;
use crate::registry::source::RegistrySource;

/// CNAME links followed inside the zone before giving up, as resolvers
/// bound chains (Unbound follows at most 8 in one answer, too).
const MAX_CNAME_CHAIN: usize = 8;

/// An answer for a name in the registry zone.
#[derive(Debug, Default)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// Set on every answer but a referral.
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// The registry zone as DNS sees it.
pub struct RegistryZone {
    registry: Arc<Registry>,
    apex: LowerName,
    public_addresses: Vec<IpAddr>,
}

impl RegistryZone {
    /// Answers for `registry`'s zone; names with content get
    /// `public_addresses`.
    pub fn new(registry: Arc<Registry>, public_addresses: Vec<IpAddr>) -> Self {
        let apex = Name::from_ascii(registry.zone().to_fqdn())
            .expect("a parsed registry zone is a valid DNS name");
        Self {
            registry,
            apex: LowerName::new(&apex),
            public_addresses,
        }
    }

    /// Whether `qname` is the zone or below it.
    pub fn contains(&self, qname: &LowerName) -> bool {
        self.apex.zone_of(qname)
    }

    /// The answer for `qname` (which [`RegistryZone::contains`]) and
    /// `qtype`.
    pub fn answer(&self, qname: &LowerName, qtype: RecordType) -> Answer {
        let source = self.registry.read();
        let height = source.height();
        let soa = self.soa(height);
        let mut answer = Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            ..Answer::default()
        };
        let mut qname: Name = qname.into();
        for _ in 0..=MAX_CNAME_CHAIN {
            let lookup = |name: &reg::Name| source.state().lookup(name, height);
            match self.step(&qname, qtype, &soa, lookup, &mut answer) {
                Step::Done => return answer,
                Step::Negative(rcode) => {
                    // After a CNAME the answer is the alias plus the
                    // target's negative answer (RFC 2308 section 2.1).
                    answer.rcode = rcode;
                    answer.authorities.push(soa);
                    return answer;
                }
                Step::Alias(target) => {
                    if !self.apex.zone_of(&LowerName::new(&target)) {
                        // Outside the zone: the client's resolver follows it.
                        return answer;
                    }
                    qname = target;
                }
            }
        }
        answer
    }

    fn soa(&self, height: u64) -> Record {
        let apex: Name = (&self.apex).into();
        let ttl = self.registry.soa_ttl_secs();
        let hostmaster = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(&apex))
            .expect("hostmaster under a valid zone is valid");
        // The serial follows the chain height, so secondaries and caches
        // see every block as a new version of the zone.
        let soa = SOA::new(
            apex.clone(),
            hostmaster,
            height as u32,
            1800,
            900,
            604_800,
            ttl,
        );
        Record::from_rdata(apex, ttl, RData::SOA(soa))
    }

    fn step<'a>(
        &self,
        qname: &Name,
        qtype: RecordType,
        soa: &Record,
        lookup: impl Fn(&reg::Name) -> Option<&'a NameState>,
        answer: &mut Answer,
    ) -> Step {
        let apex: Name = (&self.apex).into();
        if *qname == apex {
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answer.answers.push(soa.clone());
                return Step::Done;
            }
            return Step::Negative(ResponseCode::NoError);
        }
        let Ok((name, sub)) = self.registry.zone().split(&qname.to_ascii()) else {
            return Step::Negative(ResponseCode::NXDomain);
        };
        let Some(state) = lookup(&name) else {
            return Step::Negative(ResponseCode::NXDomain);
        };
        let name_fqdn = Name::from_ascii(self.registry.zone().fqdn(&name))
            .expect("a registry name under a valid zone is a valid DNS name");
        let records = state.records.records();

        // A delegation cuts the tree at the highest subname holding NS.
        for cut in ancestors_top_down(&sub) {
            let ns: Vec<&reg::Record> = at(records, &cut, reg::RecordType::Ns).collect();
            if ns.is_empty() {
                continue;
            }
            let cut_name = owner_name(&cut, &name_fqdn);
            if cut == sub.as_str() && qtype == RecordType::DS {
                // The parent side of the cut answers DS (RFC 4035 3.1.4.1).
                break;
            }
            answer.authoritative = false;
            for record in ns
                .iter()
                .copied()
                .chain(at(records, &cut, reg::RecordType::Ds))
            {
                answer.authorities.push(to_record(&cut_name, record));
            }
            for record in &ns {
                let RecordData::Ns(target) = &record.data else {
                    continue;
                };
                answer.additionals.extend(glue(
                    records,
                    target,
                    &name_fqdn,
                    self.registry.zone(),
                    &name,
                ));
            }
            return Step::Done;
        }

        let here: Vec<&reg::Record> = records.iter().filter(|r| r.subname == sub).collect();
        if here.is_empty() && !sub.is_apex() {
            let below = format!(".{}", sub.as_str());
            let empty_non_terminal = records.iter().any(|r| r.subname.as_str().ends_with(&below));
            return Step::Negative(if empty_non_terminal {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            });
        }
        let wanted = reg::RecordType::from_code(u16::from(qtype));
        let matching: Vec<&reg::Record> = here
            .iter()
            .copied()
            .filter(|r| qtype == RecordType::ANY || Some(r.data.rtype()) == wanted)
            .collect();
        if !matching.is_empty() {
            answer
                .answers
                .extend(matching.iter().map(|r| to_record(qname, r)));
            return Step::Done;
        }
        if let Some(cname) = here
            .iter()
            .find(|r| r.data.rtype() == reg::RecordType::Cname)
        {
            answer.answers.push(to_record(qname, cname));
            if let RecordData::Cname(target) = &cname.data {
                return Step::Alias(domain_name(target));
            }
        }
        let wants_address = matches!(qtype, RecordType::A | RecordType::AAAA);
        if sub.is_apex() && state.content.is_some() && wants_address {
            let ttl = self.registry.soa_ttl_secs();
            let addresses = self
                .public_addresses
                .iter()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                });
            answer
                .answers
                .extend(addresses.map(|rdata| Record::from_rdata(qname.clone(), ttl, rdata)));
            if !answer.answers.is_empty() {
                return Step::Done;
            }
        }
        Step::Negative(ResponseCode::NoError)
    }
}

/// What one step of the answer found.
enum Step {
    /// The answer is complete.
    Done,
    /// NXDOMAIN, or NODATA (`NoError`): the SOA goes in the authority.
    Negative(ResponseCode),
    /// A CNAME to follow.
    Alias(Name),
}

/// The subname and its ancestors inside the name, from the name itself
/// (`""`) down: `a.b` gives `""`, `b`, `a.b`.
fn ancestors_top_down(sub: &Subname) -> Vec<String> {
    let mut out = vec![String::new()];
    if sub.is_apex() {
        return out;
    }
    let labels: Vec<&str> = sub.as_str().split('.').collect();
    for i in (0..labels.len()).rev() {
        out.push(labels[i..].join("."));
    }
    out
}

fn at<'a>(
    records: &'a [reg::Record],
    subname: &'a str,
    rtype: reg::RecordType,
) -> impl Iterator<Item = &'a reg::Record> + 'a {
    records
        .iter()
        .filter(move |r| r.subname.as_str() == subname && r.data.rtype() == rtype)
}

fn owner_name(subname: &str, name_fqdn: &Name) -> Name {
    if subname.is_empty() {
        return name_fqdn.clone();
    }
    Name::from_ascii(subname)
        .and_then(|s| s.append_domain(name_fqdn))
        .expect("a parsed subname under a valid name is a valid DNS name")
}

/// Address records for a name server inside the delegated name (glue).
fn glue(
    records: &[reg::Record],
    target: &reg::DomainName,
    name_fqdn: &Name,
    zone: &reg::Zone,
    name: &reg::Name,
) -> Vec<Record> {
    let Ok((target_name, target_sub)) = zone.split(target.as_str()) else {
        return Vec::new();
    };
    if &target_name != name {
        return Vec::new();
    }
    let owner = owner_name(target_sub.as_str(), name_fqdn);
    [reg::RecordType::A, reg::RecordType::Aaaa]
        .into_iter()
        .flat_map(|t| at(records, target_sub.as_str(), t))
        .map(|r| to_record(&owner, r))
        .collect()
}

fn domain_name(name: &reg::DomainName) -> Name {
    Name::from_ascii(name.to_string()).expect("a parsed domain name is a valid DNS name")
}

/// A registry record as a DNS record owned by `owner`.
fn to_record(owner: &Name, record: &reg::Record) -> Record {
    Record::from_rdata(owner.clone(), record.ttl_secs, to_rdata(&record.data))
}

fn to_rdata(data: &RecordData) -> RData {
    // Types whose RDATA holds no names are written in their RFC wire form,
    // so they need no optional hickory features (DS lives behind dnssec).
    let raw = |rtype: RecordType, bytes: Vec<u8>| RData::Unknown {
        code: rtype,
        rdata: NULL::with(bytes),
    };
    match data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Cname(target) => RData::CNAME(CNAME(domain_name(target))),
        RecordData::Ns(target) => RData::NS(NS(domain_name(target))),
        RecordData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, domain_name(exchange))),
        RecordData::Txt(strings) => {
            RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
        }
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, domain_name(target))),
        RecordData::Caa { flags, tag, value } => {
            let mut bytes = vec![*flags, tag.len() as u8];
            bytes.extend_from_slice(tag.as_bytes());
            bytes.extend_from_slice(value);
            raw(RecordType::CAA, bytes)
        }
        RecordData::Tlsa {
            usage,
            selector,
            matching_type,
            data,
        } => {
            let mut bytes = vec![*usage, *selector, *matching_type];
            bytes.extend_from_slice(data);
            raw(RecordType::TLSA, bytes)
        }
        RecordData::Ds {
            key_tag,
            algorithm,
            digest_type,
            digest,
        } => {
            let mut bytes = key_tag.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[*algorithm, *digest_type]);
            bytes.extend_from_slice(digest);
            raw(RecordType::DS, bytes)
        }
    }
}
