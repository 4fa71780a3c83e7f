//! CNI input: the environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`) and the network configuration on stdin, as the runtime hands them to `multinic-cni`.
//!
//! Input format (so seeds stay readable): the first line is `COMMAND|CONTAINERID|NETNS|IFNAME|ARGS`
//! (missing fields are unset variables), the rest is stdin. Never panics; a parsed config yields a
//! result that is valid JSON, and IFALIAS marks (also read from the kernel) round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multinic_api::config::validate_ifname;
use multinic_cni::alias::Mark;
use multinic_cni::args::{Command, parse_cni_args, parse_env};
use multinic_cni::config::{is_1_1, parse_conf, sniff_version, version_result};
use multinic_cni::result::{AppliedDevice, AppliedRoute, merge_result, pass_through};

fuzz_target!(|data: &[u8]| {
    let (head, stdin) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let fields: Vec<&str> = head.splitn(5, '|').collect();
    let var = |i: usize| fields.get(i).map(|s| s.to_string());
    let env = parse_env(|k| match k {
        "CNI_COMMAND" => var(0),
        "CNI_CONTAINERID" => var(1),
        "CNI_NETNS" => var(2),
        "CNI_IFNAME" => var(3),
        "CNI_ARGS" => var(4),
        _ => None,
    });
    if let Ok(env) = &env {
        // The commands that act on an attachment only run with a usable interface name and a
        // container ID that cannot name a path.
        if matches!(env.command, Command::Add | Command::Del | Command::Check) {
            assert!(validate_ifname(&env.ifname).is_ok(), "{:?}", env.ifname);
            assert!(!env.container_id.is_empty() && !env.container_id.contains('/'));
        }
        // Whatever identifies a pod must be usable to look plans up.
        let _ = env.pod.identifies_a_pod();
    }
    if let Some(args) = fields.get(4) {
        let _ = parse_cni_args(args);
        if let Some(mark) = Mark::parse(args) {
            assert_eq!(Mark::parse(&mark.to_string()), Some(mark));
        }
    }

    let version = sniff_version(stdin);
    let _ = version_result(version.as_deref().unwrap_or("1.1.0"));
    let Ok(conf) = parse_conf(stdin) else { return };
    assert!(conf.state_dir.is_absolute());
    let passed = pass_through(&conf.cni_version, conf.prev_result.as_ref());
    assert!(passed.is_object());
    let devices = [AppliedDevice {
        name: "net1".into(),
        mac: Some("02:00:00:00:00:01".into()),
        mtu: Some(9000),
        ips: vec!["10.10.0.2/26".parse().unwrap(), "fd00::2/64".parse().unwrap()],
        gateway: Some("10.10.0.1".parse().unwrap()),
        routes: vec![
            AppliedRoute {
                dst: "10.10.0.0/16".parse().unwrap(),
                gw: None,
                table: Some(101),
            },
            AppliedRoute {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.10.0.1".parse().unwrap()),
                table: None,
            },
        ],
    }];
    if let Ok(result) = merge_result(&conf.cni_version, conf.prev_result.as_ref(), "/run/netns/x", &devices) {
        let interfaces = result["interfaces"].as_array().expect("interfaces is an array");
        assert!(interfaces.iter().any(|i| i["name"] == "net1"));
        let _ = is_1_1(&conf.cni_version);
        // The result is printed on stdout: it must serialise.
        let _ = serde_json::to_vec(&result).expect("result serialises");
    }
});
