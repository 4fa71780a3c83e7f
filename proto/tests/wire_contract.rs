//! Pins the wire contract with the kubelet: package, service, method and message names, field numbers, types
//! and labels must match upstream `k8s.io/kubelet/pkg/apis/{dra,dra-health,pluginregistration}`.
//! If one of these tests fails, the generated code is no longer wire-compatible with the kubelet.

use std::collections::{BTreeMap, BTreeSet};

use multinic_proto::{FILE_DESCRIPTOR_SET, dra, health, registration};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

use Label::{Optional as Opt, Repeated as Rep};
use Type::{Bool, Enum, Int64, Message as Msg, String as Str};

/// One expected field: (name, number, type, label, fully qualified type name for message/enum fields).
type FieldSpec = (&'static str, i32, Type, Label, Option<&'static str>);

const DRA_V1: &str = "k8s.io.kubelet.pkg.apis.dra.v1";
/// Fields declared `optional` (proto3 explicit presence) upstream: `share_id` of dra/v1 `Device`
/// (k8s.io/kubelet v0.36.3 `pkg/apis/dra/v1/api.proto`: `optional string share_id = 5;`).
const PROTO3_OPTIONAL: &[&str] = &["k8s.io.kubelet.pkg.apis.dra.v1.Device.share_id"];
const DRA_V1BETA1: &str = "k8s.io.kubelet.pkg.apis.dra.v1beta1";

fn fds() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

/// All messages in the set (including nested map-entry messages) keyed by fully qualified name
/// (without leading dot).
fn all_messages(fds: &FileDescriptorSet) -> BTreeMap<String, DescriptorProto> {
    fn walk(prefix: &str, msgs: &[DescriptorProto], out: &mut BTreeMap<String, DescriptorProto>) {
        for m in msgs {
            let name = format!("{prefix}.{}", m.name());
            walk(&name, &m.nested_type, out);
            out.insert(name, m.clone());
        }
    }
    let mut out = BTreeMap::new();
    for f in &fds.file {
        walk(f.package(), &f.message_type, &mut out);
    }
    out
}

/// Expected messages of the DRAPlugin API (identical for v1 and v1beta1), upstream
/// `staging/src/k8s.io/kubelet/pkg/apis/dra/{v1,v1beta1}/api.proto`.
fn dra_messages(pkg: &str) -> Vec<(String, Vec<FieldSpec>)> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let t = |name: &str| Some(leak(format!(".{pkg}.{name}")));
    vec![
        (
            format!("{pkg}.NodePrepareResourcesRequest"),
            vec![("claims", 1, Msg, Rep, t("Claim"))],
        ),
        (
            format!("{pkg}.NodePrepareResourcesResponse"),
            vec![("claims", 1, Msg, Rep, t("NodePrepareResourcesResponse.ClaimsEntry"))],
        ),
        (
            format!("{pkg}.NodePrepareResourcesResponse.ClaimsEntry"),
            vec![
                ("key", 1, Str, Opt, None),
                ("value", 2, Msg, Opt, t("NodePrepareResourceResponse")),
            ],
        ),
        (
            format!("{pkg}.NodePrepareResourceResponse"),
            vec![("devices", 1, Msg, Rep, t("Device")), ("error", 2, Str, Opt, None)],
        ),
        (
            format!("{pkg}.Device"),
            vec![
                ("request_names", 1, Str, Rep, None),
                ("pool_name", 2, Str, Opt, None),
                ("device_name", 3, Str, Opt, None),
                ("cdi_device_ids", 4, Str, Rep, None),
            ],
        ),
        (
            format!("{pkg}.NodeUnprepareResourcesRequest"),
            vec![("claims", 1, Msg, Rep, t("Claim"))],
        ),
        (
            format!("{pkg}.NodeUnprepareResourcesResponse"),
            vec![("claims", 1, Msg, Rep, t("NodeUnprepareResourcesResponse.ClaimsEntry"))],
        ),
        (
            format!("{pkg}.NodeUnprepareResourcesResponse.ClaimsEntry"),
            vec![
                ("key", 1, Str, Opt, None),
                ("value", 2, Msg, Opt, t("NodeUnprepareResourceResponse")),
            ],
        ),
        (
            format!("{pkg}.NodeUnprepareResourceResponse"),
            vec![("error", 1, Str, Opt, None)],
        ),
        (
            format!("{pkg}.Claim"),
            vec![
                ("namespace", 1, Str, Opt, None),
                ("uid", 2, Str, Opt, None),
                ("name", 3, Str, Opt, None),
            ],
        ),
    ]
}

/// Upstream `staging/src/k8s.io/kubelet/pkg/apis/pluginregistration/v1/api.proto`.
fn registration_messages() -> Vec<(String, Vec<FieldSpec>)> {
    vec![
        (
            "pluginregistration.PluginInfo".into(),
            vec![
                ("type", 1, Str, Opt, None),
                ("name", 2, Str, Opt, None),
                ("endpoint", 3, Str, Opt, None),
                ("supported_versions", 4, Str, Rep, None),
            ],
        ),
        (
            "pluginregistration.RegistrationStatus".into(),
            vec![("plugin_registered", 1, Bool, Opt, None), ("error", 2, Str, Opt, None)],
        ),
        ("pluginregistration.RegistrationStatusResponse".into(), vec![]),
        ("pluginregistration.InfoRequest".into(), vec![]),
    ]
}

/// Upstream `staging/src/k8s.io/kubelet/pkg/apis/dra-health/{v1,v1alpha1}/api.proto`.
fn health_messages(pkg: &'static str) -> Vec<(String, Vec<FieldSpec>)> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let t = |name: &str| Some(leak(format!(".{pkg}.{name}")));
    vec![
        (format!("{pkg}.NodeWatchResourcesRequest"), vec![]),
        (
            format!("{pkg}.DeviceIdentifier"),
            vec![("pool_name", 1, Str, Opt, None), ("device_name", 2, Str, Opt, None)],
        ),
        (
            format!("{pkg}.DeviceHealth"),
            vec![
                ("device", 1, Msg, Opt, t("DeviceIdentifier")),
                ("health", 2, Enum, Opt, t("HealthStatus")),
                ("last_updated_time", 3, Int64, Opt, None),
                ("health_check_timeout_seconds", 4, Int64, Opt, None),
                ("message", 5, Str, Opt, None),
            ],
        ),
        (
            format!("{pkg}.NodeWatchResourcesResponse"),
            vec![("devices", 1, Msg, Rep, t("DeviceHealth"))],
        ),
    ]
}

fn expected_messages() -> Vec<(String, Vec<FieldSpec>)> {
    let mut all = dra_messages(DRA_V1);
    // v1 only: the share ID of a device allocated more than once (Kubernetes 1.35+).
    if let Some((_, fields)) = all.iter_mut().find(|(n, _)| n == &format!("{DRA_V1}.Device")) {
        fields.push(("share_id", 5, Str, Opt, None));
    }
    all.extend(dra_messages(DRA_V1BETA1));
    all.extend(registration_messages());
    all.extend(health_messages("v1"));
    all.extend(health_messages("v1alpha1"));
    all
}

#[test]
fn packages_are_exactly_upstream() {
    let fds = fds();
    let packages: BTreeSet<&str> = fds.file.iter().map(|f| f.package()).collect();
    let expected: BTreeSet<&str> = [DRA_V1, DRA_V1BETA1, "pluginregistration", "v1", "v1alpha1"].into();
    assert_eq!(packages, expected);
    for f in &fds.file {
        assert_eq!(f.syntax(), "proto3", "{} must be proto3", f.name());
        assert!(f.dependency.is_empty(), "{} must not import anything", f.name());
    }
}

#[test]
fn grpc_method_paths_are_exactly_upstream() {
    // (full method path, client streaming, server streaming, input type, output type)
    let expected: BTreeSet<(String, bool, bool, String, String)> = [
        (DRA_V1, "DRAPlugin", "NodePrepareResources", false, false),
        (DRA_V1, "DRAPlugin", "NodeUnprepareResources", false, false),
        (DRA_V1BETA1, "DRAPlugin", "NodePrepareResources", false, false),
        (DRA_V1BETA1, "DRAPlugin", "NodeUnprepareResources", false, false),
        ("pluginregistration", "Registration", "GetInfo", false, false),
        (
            "pluginregistration",
            "Registration",
            "NotifyRegistrationStatus",
            false,
            false,
        ),
        ("v1", "DRAResourceHealth", "NodeWatchResources", false, true),
        ("v1alpha1", "DRAResourceHealth", "NodeWatchResources", false, true),
    ]
    .into_iter()
    .map(|(pkg, svc, method, cs, ss)| {
        let (input, output) = match method {
            "GetInfo" => ("InfoRequest", "PluginInfo"),
            "NotifyRegistrationStatus" => ("RegistrationStatus", "RegistrationStatusResponse"),
            m => (
                Box::leak(format!("{m}Request").into_boxed_str()) as &str,
                Box::leak(format!("{m}Response").into_boxed_str()) as &str,
            ),
        };
        (
            format!("/{pkg}.{svc}/{method}"),
            cs,
            ss,
            format!(".{pkg}.{input}"),
            format!(".{pkg}.{output}"),
        )
    })
    .collect();

    let fds = fds();
    let mut actual = BTreeSet::new();
    for f in &fds.file {
        for s in &f.service {
            for m in &s.method {
                actual.insert((
                    format!("/{}.{}/{}", f.package(), s.name(), m.name()),
                    m.client_streaming(),
                    m.server_streaming(),
                    m.input_type().to_string(),
                    m.output_type().to_string(),
                ));
            }
        }
    }
    assert_eq!(actual, expected);

    // Spot-check the literal paths the kubelet dials.
    let paths: BTreeSet<&str> = actual.iter().map(|(p, ..)| p.as_str()).collect();
    for p in [
        "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources",
        "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeUnprepareResources",
        "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodePrepareResources",
        "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodeUnprepareResources",
        "/pluginregistration.Registration/GetInfo",
        "/pluginregistration.Registration/NotifyRegistrationStatus",
        "/v1.DRAResourceHealth/NodeWatchResources",
        "/v1alpha1.DRAResourceHealth/NodeWatchResources",
    ] {
        assert!(paths.contains(p), "missing gRPC method {p}");
    }
}

#[test]
fn generated_service_names_match_descriptor() {
    assert_eq!(
        dra::v1::dra_plugin_server::SERVICE_NAME,
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin"
    );
    assert_eq!(
        dra::v1beta1::dra_plugin_server::SERVICE_NAME,
        "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin"
    );
    assert_eq!(
        registration::registration_server::SERVICE_NAME,
        "pluginregistration.Registration"
    );
    assert_eq!(
        health::v1::dra_resource_health_server::SERVICE_NAME,
        "v1.DRAResourceHealth"
    );
    assert_eq!(
        health::v1alpha1::dra_resource_health_server::SERVICE_NAME,
        "v1alpha1.DRAResourceHealth"
    );
    assert_eq!(multinic_proto::DRA_PLUGIN_SERVICE_V1, "v1.DRAPlugin");
    assert_eq!(multinic_proto::DRA_PLUGIN_SERVICE_V1BETA1, "v1beta1.DRAPlugin");
    assert_eq!(multinic_proto::DRA_RESOURCE_HEALTH_SERVICE_V1, "v1.DRAResourceHealth");
    assert_eq!(
        multinic_proto::DRA_RESOURCE_HEALTH_SERVICE_V1ALPHA1,
        "v1alpha1.DRAResourceHealth"
    );
    assert_eq!(multinic_proto::DRA_PLUGIN_TYPE, "DRAPlugin");
}

#[test]
fn message_fields_are_exactly_upstream() {
    let fds = fds();
    let actual = all_messages(&fds);
    let expected = expected_messages();

    let expected_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let actual_names: BTreeSet<&str> = actual.keys().map(String::as_str).collect();
    assert_eq!(actual_names, expected_names, "set of messages differs from upstream");

    for (name, fields) in &expected {
        let msg = &actual[name];
        let is_map_entry = name.ends_with("Entry");
        assert_eq!(
            msg.options.as_ref().and_then(|o| o.map_entry).unwrap_or(false),
            is_map_entry,
            "{name}: map_entry flag"
        );
        // proto3 `optional` fields each come with a synthetic oneof `_<field>`; no real oneofs.
        let oneofs: Vec<String> = msg.oneof_decl.iter().map(|o| o.name().to_string()).collect();
        let want_oneofs: Vec<String> = PROTO3_OPTIONAL
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{name}.")))
            .map(|f| format!("_{f}"))
            .collect();
        assert_eq!(oneofs, want_oneofs, "{name}: oneofs / proto3 optional fields");
        let want: Vec<(String, i32, Type, Label, Option<String>)> = fields
            .iter()
            .map(|(n, num, ty, label, tn)| (n.to_string(), *num, *ty, *label, tn.map(str::to_string)))
            .collect();
        let got: Vec<(String, i32, Type, Label, Option<String>)> = msg
            .field
            .iter()
            .map(|f| {
                assert_eq!(
                    f.proto3_optional(),
                    PROTO3_OPTIONAL.contains(&format!("{name}.{}", f.name()).as_str()),
                    "{name}.{}: proto3 optional differs from upstream",
                    f.name()
                );
                (
                    f.name().to_string(),
                    f.number(),
                    f.r#type(),
                    f.label(),
                    f.type_name.clone(),
                )
            })
            .collect();
        assert_eq!(got, want, "{name}: field table differs from upstream");
    }
}

#[test]
fn health_enum_is_exactly_upstream() {
    let fds = fds();
    for pkg in ["v1", "v1alpha1"] {
        let file = fds.file.iter().find(|f| f.package() == pkg).unwrap();
        let enums: Vec<_> = file
            .enum_type
            .iter()
            .map(|e| {
                let values: Vec<(&str, i32)> = e.value.iter().map(|v| (v.name(), v.number())).collect();
                (e.name(), values)
            })
            .collect();
        assert_eq!(
            enums,
            vec![("HealthStatus", vec![("UNKNOWN", 0), ("HEALTHY", 1), ("UNHEALTHY", 2)])]
        );
    }
    assert_eq!(health::v1::HealthStatus::Healthy as i32, 1);
    assert_eq!(health::v1alpha1::HealthStatus::Unhealthy as i32, 2);
}

/// Encodes `field` (length-delimited wire type 2) with a one-byte length, for building expected bytes.
fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128);
    let mut out = vec![(field << 3) | 2, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

#[test]
fn node_prepare_request_raw_bytes() {
    let req = dra::v1::NodePrepareResourcesRequest {
        claims: vec![dra::v1::Claim {
            namespace: "ns".into(),
            uid: "uid-1".into(),
            name: "claim".into(),
        }],
    };
    let bytes = req.encode_to_vec();

    let claim = [ld(1, b"ns"), ld(2, b"uid-1"), ld(3, b"claim")].concat();
    let expected = ld(1, &claim);
    assert_eq!(bytes, expected);
    // Tags explicitly: 0x0a = field 1 (claims), inside 0x0a/0x12/0x1a = namespace/uid/name.
    assert_eq!(bytes[0], 0x0a);
    assert_eq!(&bytes[2..4], &[0x0a, 0x02]);
    assert_eq!(bytes[6], 0x12);
    assert_eq!(bytes[13], 0x1a);

    // v1 and v1beta1 are identical on the wire.
    let beta = dra::v1beta1::NodePrepareResourcesRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(beta.claims[0].uid, "uid-1");
    assert_eq!(beta.encode_to_vec(), bytes);
}

#[test]
fn node_prepare_response_raw_bytes() {
    let device = dra::v1::Device {
        request_names: vec!["r".into()],
        pool_name: "p".into(),
        device_name: "d".into(),
        cdi_device_ids: vec!["c".into()],
        share_id: Some("s".into()),
    };
    let resp = dra::v1::NodePrepareResourcesResponse {
        claims: [(
            "u".to_string(),
            dra::v1::NodePrepareResourceResponse {
                devices: vec![device],
                error: "e".into(),
            },
        )]
        .into(),
    };
    let bytes = resp.encode_to_vec();

    let device = [ld(1, b"r"), ld(2, b"p"), ld(3, b"d"), ld(4, b"c"), ld(5, b"s")].concat();
    let value = [ld(1, &device), ld(2, b"e")].concat();
    let entry = [ld(1, b"u"), ld(2, &value)].concat();
    assert_eq!(bytes, ld(1, &entry));

    // Explicit presence: an empty share ID is still sent; no share ID sends nothing.
    let empty = dra::v1::Device {
        share_id: Some(String::new()),
        ..Default::default()
    };
    assert_eq!(empty.encode_to_vec(), ld(5, b""));
    assert!(dra::v1::Device::default().encode_to_vec().is_empty());

    let unprep = dra::v1::NodeUnprepareResourcesResponse {
        claims: [(
            "u".to_string(),
            dra::v1::NodeUnprepareResourceResponse { error: "x".into() },
        )]
        .into(),
    };
    assert_eq!(
        unprep.encode_to_vec(),
        ld(1, &[ld(1, b"u"), ld(2, &ld(1, b"x"))].concat())
    );
}

#[test]
fn registration_raw_bytes() {
    let info = registration::PluginInfo {
        r#type: "DRAPlugin".into(),
        name: "n".into(),
        endpoint: "/s".into(),
        supported_versions: vec!["v1.DRAPlugin".into(), "v1beta1.DRAPlugin".into()],
    };
    let expected = [
        ld(1, b"DRAPlugin"),
        ld(2, b"n"),
        ld(3, b"/s"),
        ld(4, b"v1.DRAPlugin"),
        ld(4, b"v1beta1.DRAPlugin"),
    ]
    .concat();
    assert_eq!(info.encode_to_vec(), expected);

    let status = registration::RegistrationStatus {
        plugin_registered: true,
        error: "e".into(),
    };
    assert_eq!(status.encode_to_vec(), [vec![0x08, 0x01], ld(2, b"e")].concat());
    assert!(registration::InfoRequest {}.encode_to_vec().is_empty());
    assert!(registration::RegistrationStatusResponse {}.encode_to_vec().is_empty());
}

#[test]
fn health_raw_bytes() {
    let resp = health::v1::NodeWatchResourcesResponse {
        devices: vec![health::v1::DeviceHealth {
            device: Some(health::v1::DeviceIdentifier {
                pool_name: "p".into(),
                device_name: "d".into(),
            }),
            health: health::v1::HealthStatus::Unhealthy as i32,
            last_updated_time: 5,
            health_check_timeout_seconds: 7,
            message: "m".into(),
        }],
    };
    let bytes = resp.encode_to_vec();
    let dh = [
        ld(1, &[ld(1, b"p"), ld(2, b"d")].concat()),
        vec![0x10, 0x02], // field 2 varint: UNHEALTHY
        vec![0x18, 0x05], // field 3 varint
        vec![0x20, 0x07], // field 4 varint
        ld(5, b"m"),
    ]
    .concat();
    assert_eq!(bytes, ld(1, &dh));

    let alpha = health::v1alpha1::NodeWatchResourcesResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!(alpha.encode_to_vec(), bytes);
}
