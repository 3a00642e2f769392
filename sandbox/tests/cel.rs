//! CRD validation the real server does: `x-kubernetes-validations` (CEL) with
//! transition rules, and formats, on sofort's own CRD and a fixture CRD, through
//! kubectl and kube::Client.

mod common;

use kube::api::{Api, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PATCHPOLICY_CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/patchpolicy.yaml");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

fn policy(name: &str, spec: Value) -> String {
    let doc = json!({"apiVersion": "sofort.dev/v1alpha1", "kind": "PatchPolicy",
        "metadata": {"name": name}, "spec": spec});
    serde_json::to_string(&doc).unwrap_or_default()
}

async fn with_patchpolicy_crd() -> common::Env {
    let env = common::bare().await;
    env.kubectl_ok(&["apply", "-f", PATCHPOLICY_CRD]);
    env
}

/// kubectl create of a policy that must be refused; returns stderr.
fn refused(env: &common::Env, name: &str, spec: Value) -> String {
    let file = env.write(&format!("{name}.json"), &policy(name, spec));
    let file = file.to_string_lossy().to_string();
    let (ok, out, err) = env.kubectl(&["create", "-f", &file]);
    assert!(!ok, "policy {name} was accepted: {out}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patchpolicy_cel_rules_refuse_bad_policies_with_the_real_error_shape() -> TestResult {
    let env = with_patchpolicy_crd().await;

    let err = refused(
        &env,
        "pct",
        json!({"revision": "r1", "rollout": {"maxUnavailable": "150%"}}),
    );
    assert!(
        err.contains(r#"The PatchPolicy "pct" is invalid: spec.rollout.maxUnavailable: Invalid value: "string": maxUnavailable must be an integer from 1 to 2147483647 or a percentage from 1% to 100%; a number in quotes such as "3" is not accepted, write 3"#),
        "{err}"
    );
    // A number in quotes is refused too (the decoder no longer reads "3" as 3).
    let err = refused(
        &env,
        "quoted",
        json!({"revision": "r1", "rollout": {"maxUnavailable": "3"}}),
    );
    assert!(
        err.contains(
            r#"spec.rollout.maxUnavailable: Invalid value: "string": maxUnavailable must be"#
        ),
        "{err}"
    );
    let err = refused(
        &env,
        "zero",
        json!({"revision": "r1", "rollout": {"maxUnavailable": 0}}),
    );
    assert!(
        err.contains(
            r#"spec.rollout.maxUnavailable: Invalid value: "integer": maxUnavailable must be"#
        ),
        "{err}"
    );
    let err = refused(
        &env,
        "window",
        json!({"revision": "r1", "maintenanceWindows": [{"start": "22:00", "end": "22:00"}]}),
    );
    assert!(
        err.contains(
            r#"spec.maintenanceWindows[0]: Invalid value: "object": start and end must differ"#
        ),
        "{err}"
    );
    let err = refused(
        &env,
        "blackout",
        json!({"revision": "r1", "blackouts": [{"start": "2026-12-27T00:00:00+01:00", "end": "2026-12-24T00:00:00+01:00"}]}),
    );
    assert!(
        err.contains(
            r#"spec.blackouts[0]: Invalid value: "object": blackout end must be after its start"#
        ),
        "{err}"
    );
    // The date-time format is checked before CEL sees the timestamps.
    let err = refused(
        &env,
        "notatime",
        json!({"revision": "r1", "blackouts": [{"start": "Christmas", "end": "2026-12-24T00:00:00+01:00"}]}),
    );
    assert!(
        err.contains(r#"spec.blackouts[0].start: Invalid value: "Christmas": spec.blackouts[0].start in body must be of type date-time: "Christmas""#),
        "{err}"
    );
    assert_eq!(
        env.kubectl_ok(&["get", "patchpolicies", "-o", "name"])
            .trim(),
        "",
        "no refused policy was stored"
    );

    // Valid ones on the other side of each rule are accepted.
    let ok = policy(
        "good",
        json!({"revision": "r1", "rollout": {"maxUnavailable": "100%"},
            "maintenanceWindows": [{"start": "00:00", "end": "00:00"}, {"start": "22:00", "end": "05:00"}],
            "blackouts": [{"start": "2026-12-24T00:00:00+01:00", "end": "2026-12-27T00:00:00+01:00"}]}),
    );
    let file = env.write("good.json", &ok);
    env.kubectl_ok(&["create", "-f", &file.to_string_lossy()]);
    for n in ["1", "25%", "1%"] {
        let v: Value = if n.ends_with('%') {
            json!(n)
        } else {
            json!(n.parse::<i64>()?)
        };
        let name = format!("mu-{}", n.replace('%', "pct"));
        let file = env.write(
            &format!("{name}.json"),
            &policy(
                &name,
                json!({"revision": "r1", "rollout": {"maxUnavailable": v}}),
            ),
        );
        env.kubectl_ok(&["create", "-f", &file.to_string_lossy()]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_policy_is_a_422_status_listing_every_failed_field() -> TestResult {
    let env = with_patchpolicy_crd().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("sofort.dev", "v1alpha1", "PatchPolicy"),
        "patchpolicies",
    );
    let api: Api<DynamicObject> = Api::all_with(env.client.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sofort.dev/v1alpha1", "kind": "PatchPolicy", "metadata": {"name": "x"},
        "spec": {"revision": "r1", "rollout": {"maxUnavailable": "0%"},
                 "maintenanceWindows": [{"start": "01:00", "end": "01:00"}]}
    }))?;
    let Err(kube::Error::Api(status)) = api.create(&PostParams::default(), &obj).await else {
        return Err("the invalid policy was accepted".into());
    };
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert!(
        status
            .message
            .starts_with(r#"PatchPolicy.sofort.dev "x" is invalid: ["#),
        "{}",
        status.message
    );
    let details = status.details.ok_or("no details")?;
    assert_eq!(details.kind, "PatchPolicy");
    assert_eq!(details.group, "sofort.dev");
    let mut fields: Vec<String> = details
        .causes
        .iter()
        .map(|c| format!("{} {}", c.field, c.reason))
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "spec.maintenanceWindows[0] FieldValueInvalid",
            "spec.rollout.maxUnavailable FieldValueInvalid"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_policy_is_accepted() -> TestResult {
    let env = with_patchpolicy_crd().await;
    let mut policies = 0;
    // The examples tree has subfolders (e.g. Argo CD's health check): walk it
    // and read every YAML file.
    let mut dirs = vec![std::path::PathBuf::from(EXAMPLES)];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        if !text.contains("kind: PatchPolicy") {
            continue;
        }
        // Only the policies: the examples may also hold Secrets in namespaces
        // this bare sandbox does not have.
        for doc in text.split("\n---") {
            if doc.contains("kind: PatchPolicy") {
                let file = env.write(&format!("example-{policies}.yaml"), doc);
                env.kubectl_ok(&["create", "-f", &file.to_string_lossy()]);
                policies += 1;
            }
        }
    }
    assert!(policies >= 3, "found {policies} example policies");
    Ok(())
}

const IMMUTABLE_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              class:
                type: string
                x-kubernetes-validations:
                - {rule: self == oldSelf, message: class is immutable}
              replicas:
                type: integer
                format: int32
                x-kubernetes-validations:
                - {rule: self >= oldSelf, message: replicas may only grow, reason: FieldValueForbidden}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transition_rules_compare_with_the_stored_object() -> TestResult {
    let env = common::bare().await;
    let crd = env.write("gadgets.yaml", IMMUTABLE_CRD);
    env.kubectl_ok(&["apply", "-f", &crd.to_string_lossy()]);
    let gadget = |class: &str, replicas: i64| {
        json!({"apiVersion": "example.com/v1", "kind": "Gadget",
            "metadata": {"name": "g", "namespace": "default"},
            "spec": {"class": class, "replicas": replicas}})
        .to_string()
    };
    // Create: transition rules do not apply (there is no oldSelf).
    let f = env.write("g1.json", &gadget("gold", 3));
    env.kubectl_ok(&["apply", "-f", &f.to_string_lossy()]);
    let f = env.write("g2.json", &gadget("gold", 5));
    env.kubectl_ok(&["apply", "-f", &f.to_string_lossy()]);
    let f = env.write("g3.json", &gadget("silver", 2));
    let (ok, _, err) = env.kubectl(&["apply", "-f", &f.to_string_lossy()]);
    assert!(!ok);
    assert!(
        err.contains(r#"spec.class: Invalid value: "string": class is immutable"#),
        "{err}"
    );
    assert!(
        err.contains("spec.replicas: Forbidden: replicas may only grow"),
        "{err}"
    );
    let (ok, _, err) = env.kubectl(&[
        "patch",
        "gadget",
        "g",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    assert!(!ok);
    assert!(
        err.contains("spec.replicas: Forbidden: replicas may only grow"),
        "{err}"
    );
    assert_eq!(
        env.kubectl_ok(&[
            "get",
            "gadget",
            "g",
            "-o",
            "jsonpath={.spec.class}/{.spec.replicas}"
        ]),
        "gold/5"
    );
    // The int32 format bounds the field before any rule runs.
    let f = env.write("g4.json", &gadget("gold", 1i64 << 31));
    let (ok, _, err) = env.kubectl(&["apply", "-f", &f.to_string_lossy()]);
    assert!(!ok);
    assert!(err.contains("must be of type int32"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_with_a_rule_that_does_not_compile_is_refused() -> TestResult {
    let env = common::bare().await;
    let broken = IMMUTABLE_CRD.replace("self == oldSelf", "self ==");
    let crd = env.write("broken.yaml", &broken);
    let (ok, _, err) = env.kubectl(&["create", "-f", &crd.to_string_lossy()]);
    assert!(!ok);
    assert!(
        err.contains("x-kubernetes-validations[0].rule") && err.contains("compilation failed"),
        "{err}"
    );
    Ok(())
}
