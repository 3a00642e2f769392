//! The chart's ValidatingAdmissionPolicies, evaluated as the API server would:
//! every CEL expression of the rendered policies (match conditions, variables
//! in order, validations and their messages) runs in the `cel` engine with the
//! Kubernetes functions against sample admission requests (`object`,
//! `oldObject`, `request.userInfo`). No API server is involved, so this checks
//! the policies' logic itself; a compile or evaluation error fails the test
//! (the policies use `failurePolicy: Fail`, so an error would deny every write).

use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

use super::documents;

const CONTROLLER: &str = "system:serviceaccount:sofort-system:sofort-controller";
const AGENT: &str = "system:serviceaccount:sofort-system:sofort-agent";
const NODE_TOOL: &str = "system:serviceaccount:kube-system:node-labeller";

/// One admission request for a Node.
struct Request {
    operation: &'static str,
    username: &'static str,
    groups: Vec<&'static str>,
    /// The node the caller's token is bound to (service-account tokens of pods).
    token_node: Option<&'static str>,
    object: Value,
    old_object: Option<Value>,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The policy's match constraints or conditions exclude the request.
    NotMatched,
    Allowed,
    Denied(String),
}

fn cel(v: &Value) -> Result<Cel, String> {
    kube_cel::cel::to_value(v).map_err(|e| format!("cannot convert {v} to CEL: {e}"))
}

fn eval(ctx: &Context<'_>, expr: &str) -> Result<Cel, String> {
    let program = Program::compile(expr).map_err(|e| format!("`{expr}` does not compile: {e}"))?;
    program
        .execute(ctx)
        .map_err(|e| format!("`{expr}` failed: {e}"))
}

fn eval_bool(ctx: &Context<'_>, expr: &str) -> Result<bool, String> {
    match eval(ctx, expr)? {
        Cel::Bool(b) => Ok(b),
        other => Err(format!("`{expr}` returned {other:?}, not a bool")),
    }
}

/// Evaluates one rendered ValidatingAdmissionPolicy against `req`.
fn admit(policy: &Value, req: &Request) -> Result<Verdict, String> {
    let spec = &policy["spec"];
    let ops_match = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .ok_or("no resourceRules")?
        .iter()
        .any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("nodes")))
                && r["operations"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!(req.operation)))
        });
    if !ops_match {
        return Ok(Verdict::NotMatched);
    }
    let mut extra = serde_json::Map::new();
    if let Some(node) = req.token_node {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            json!([node]),
        );
    }
    let request = json!({
        "operation": req.operation,
        "userInfo": {"username": req.username, "groups": req.groups, "extra": extra},
    });
    let mut ctx = Context::default();
    ctx.register_all();
    ctx.add_variable_from_value("object", cel(&req.object)?);
    ctx.add_variable_from_value(
        "oldObject",
        match &req.old_object {
            Some(o) => cel(o)?,
            None => Cel::Null,
        },
    );
    ctx.add_variable_from_value("request", cel(&request)?);
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        let expr = c["expression"]
            .as_str()
            .ok_or("matchCondition without expression")?;
        if !eval_bool(&ctx, expr)? {
            return Ok(Verdict::NotMatched);
        }
    }
    let mut variables = std::collections::HashMap::<String, Cel>::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().ok_or("variable without name")?;
        let expr = v["expression"]
            .as_str()
            .ok_or("variable without expression")?;
        let value = eval(&ctx, expr)?;
        variables.insert(name.to_string(), value);
        ctx.add_variable_from_value("variables", variables.clone());
    }
    for v in spec["validations"].as_array().ok_or("no validations")? {
        let expr = v["expression"]
            .as_str()
            .ok_or("validation without expression")?;
        if !eval_bool(&ctx, expr)? {
            let message = match v["messageExpression"].as_str() {
                Some(m) => match eval(&ctx, m)? {
                    Cel::String(s) => s.to_string(),
                    other => return Err(format!("messageExpression returned {other:?}")),
                },
                None => v["message"].as_str().unwrap_or(expr).to_string(),
            };
            return Ok(Verdict::Denied(message));
        }
    }
    Ok(Verdict::Allowed)
}

/// The rendered policies of the default values, by name.
fn policies() -> Vec<(String, Value)> {
    documents("default")
        .into_iter()
        .filter(|(_, d)| d["kind"] == "ValidatingAdmissionPolicy")
        .map(|(_, d)| (d["metadata"]["name"].as_str().unwrap_or("?").to_string(), d))
        .collect()
}

fn policy(name: &str) -> Result<Value, String> {
    policies()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, p)| p)
        .ok_or_else(|| format!("the default render has no ValidatingAdmissionPolicy {name}"))
}

/// The verdict of every policy together: denied when one denies.
fn admitted(req: &Request) -> Result<Result<(), String>, String> {
    for (name, p) in policies() {
        if let Verdict::Denied(m) = admit(&p, req)? {
            return Ok(Err(format!("{name}: {m}")));
        }
    }
    Ok(Ok(()))
}

fn node(labels: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": labels, "annotations": annotations},
        "spec": {"podCIDR": "10.0.1.0/24"},
    })
}

/// A Node in a rollout: the controller's keys and an unrelated label and annotation.
fn in_rollout() -> Value {
    node(
        json!({"kubernetes.io/hostname": "n1", "sofort.dev/step": "Draining"}),
        json!({
            "sofort.dev/record": "{\"policy\":\"workers\",\"revision\":\"r1\",\"step\":\"Draining\"}",
            "sofort.dev/done": "{\"workers\":\"r0\"}",
            "example.com/owner": "team-a",
        }),
    )
}

fn with(mut n: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut n);
    n
}

fn update(username: &'static str, old: Value, new: Value) -> Request {
    Request {
        operation: "UPDATE",
        username,
        groups: vec!["system:serviceaccounts", "system:authenticated"],
        token_node: (username != NODE_TOOL).then_some("n1"),
        object: new,
        old_object: Some(old),
    }
}

#[test]
fn only_the_controller_may_write_its_keys() -> Result<(), String> {
    let keys = policy("sofort-controller-keys")?;
    let forge_record = with(in_rollout(), |n| {
        n["metadata"]["annotations"]["sofort.dev/record"] =
            json!("{\"policy\":\"ghost\",\"revision\":\"r1\",\"step\":\"Rebooting\"}");
    });
    let forge_done = with(in_rollout(), |n| {
        n["metadata"]["annotations"]["sofort.dev/done"] = json!("{\"workers\":\"r1\"}");
    });
    let drop_step = with(in_rollout(), |n| {
        if let Some(l) = n["metadata"]["labels"].as_object_mut() {
            l.remove("sofort.dev/step");
        }
    });
    let change_step = with(in_rollout(), |n| {
        n["metadata"]["labels"]["sofort.dev/step"] = json!("Done");
    });
    // The controller may do each of these.
    for new in [&forge_record, &forge_done, &drop_step, &change_step] {
        let req = update(CONTROLLER, in_rollout(), new.clone());
        assert_eq!(admit(&keys, &req)?, Verdict::NotMatched);
        assert_eq!(admitted(&req)?, Ok(()));
    }
    // Nobody else may: not the agent, not other node tooling.
    for user in [AGENT, NODE_TOOL] {
        for (what, new) in [
            ("record", &forge_record),
            ("done", &forge_done),
            ("step removed", &drop_step),
            ("step", &change_step),
        ] {
            let verdict = admit(&keys, &update(user, in_rollout(), new.clone()))?;
            let Verdict::Denied(msg) = verdict else {
                return Err(format!("{user} may change {what}: {verdict:?}"));
            };
            assert!(msg.starts_with("only the sofort controller may"), "{msg}");
        }
        // Setting a key on a node that had none, and creating a node with one.
        let idle = node(json!({}), json!({}));
        let claimed = with(idle.clone(), |n| {
            n["metadata"]["annotations"]["sofort.dev/record"] = json!("{}");
        });
        assert!(matches!(
            admit(&keys, &update(user, idle, claimed.clone()))?,
            Verdict::Denied(_)
        ));
        let create = Request {
            operation: "CREATE",
            old_object: None,
            object: claimed,
            ..update(user, in_rollout(), in_rollout())
        };
        assert!(matches!(admit(&keys, &create)?, Verdict::Denied(_)));
    }
    // Unrelated changes pass, by anyone, also while a rollout's keys are present.
    let relabelled = with(in_rollout(), |n| {
        n["metadata"]["labels"]["pool"] = json!("b");
        n["metadata"]["annotations"]["example.com/owner"] = json!("team-b");
    });
    for user in [NODE_TOOL, CONTROLLER] {
        let req = update(user, in_rollout(), relabelled.clone());
        assert_eq!(admitted(&req)?, Ok(()), "{user}");
    }
    let plain = node(json!({"pool": "a"}), json!({}));
    let create = Request {
        operation: "CREATE",
        old_object: None,
        object: plain.clone(),
        ..update(NODE_TOOL, plain.clone(), plain.clone())
    };
    assert_eq!(admitted(&create)?, Ok(()));
    let bare = with(plain, |n| {
        if let Some(m) = n["metadata"].as_object_mut() {
            m.remove("labels");
            m.remove("annotations");
        }
    });
    let req = update(NODE_TOOL, bare.clone(), bare);
    assert_eq!(admit(&keys, &req)?, Verdict::Allowed);
    // Break-glass: a member of system:masters may remove a broken record.
    let cleared = with(in_rollout(), |n| {
        if let Some(a) = n["metadata"]["annotations"].as_object_mut() {
            a.remove("sofort.dev/record");
        }
    });
    let admin = Request {
        groups: vec!["system:masters", "system:authenticated"],
        ..update("kubernetes-admin", in_rollout(), cleared)
    };
    assert_eq!(admit(&keys, &admin)?, Verdict::NotMatched);
    Ok(())
}

#[test]
fn the_agent_may_change_only_its_own_keys_on_its_own_node() -> Result<(), String> {
    let own = policy("sofort-agent-own-node")?;
    let acked = with(in_rollout(), |n| {
        n["metadata"]["annotations"]["sofort.dev/reboot-ack"] = json!("{}");
        n["metadata"]["labels"]["sofort.dev/reboot-required"] = json!("true");
    });
    let req = update(AGENT, in_rollout(), acked.clone());
    assert_eq!(admit(&own, &req)?, Verdict::Allowed);
    assert_eq!(admitted(&req)?, Ok(()));
    // Another node than the one its token is bound to.
    let elsewhere = Request {
        token_node: Some("n2"),
        ..update(AGENT, in_rollout(), acked)
    };
    let Verdict::Denied(msg) = admit(&own, &elsewhere)? else {
        return Err("the agent may change another node".into());
    };
    assert_eq!(
        msg,
        "the sofort agent may change only the node it runs on, not n1"
    );
    // Its spec (cordoning), or a key that is not its own.
    let uncordoned = with(in_rollout(), |n| n["spec"]["unschedulable"] = json!(false));
    assert!(matches!(
        admit(&own, &update(AGENT, in_rollout(), uncordoned))?,
        Verdict::Denied(_)
    ));
    let relabelled = with(in_rollout(), |n| {
        n["metadata"]["labels"]["pool"] = json!("b")
    });
    assert!(matches!(
        admit(&own, &update(AGENT, in_rollout(), relabelled.clone()))?,
        Verdict::Denied(_)
    ));
    // Other users are not the agent policy's business.
    assert_eq!(
        admit(&own, &update(NODE_TOOL, in_rollout(), relabelled))?,
        Verdict::NotMatched
    );
    Ok(())
}
