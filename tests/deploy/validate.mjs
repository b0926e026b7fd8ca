// Offline schema validation of the Istio and Prometheus-operator resources mcp-authz ships
// (run by tests/deploy.rs; install with `npm ci` in this directory):
//
//   node tests/deploy/validate.mjs FILE...     validate every YAML document in FILEs
//   node tests/deploy/validate.mjs --self-test show that broken documents are refused
//
// Each document goes through the @kubernetes-models model of its kind (`new Kind(doc)
// .validate()`: types, enums, required fields). Those schemas, like Kubernetes CRD schemas,
// accept unknown fields, which is how a misspelt Istio field would slip through, so Istio
// documents are also walked against the model's own schema and any field it does not declare
// is an error (what `kubectl apply --validate=strict` does against the CRD). The meshConfig
// fragment is no Kubernetes object: it is checked against the fields of istio.mesh.v1alpha1
// MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider (mesh/v1alpha1/config.proto).
//
// @kubernetes-models/istio 2.x is the last line that runs on Node 20, and it predates the
// networking.istio.io/v1 CRD version; Istio 1.22 promoted v1beta1 to v1 unchanged, so v1
// VirtualServices are checked against the v1beta1 schema (and v1 PeerAuthentications, promoted
// the same way, against theirs).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import yaml from "js-yaml";
import { AuthorizationPolicy } from "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy";
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1beta1/VirtualService";
import { PeerAuthentication } from "@kubernetes-models/istio/security.istio.io/v1beta1/PeerAuthentication";
import {
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const require = createRequire(import.meta.url);

/** The JSON schema an @kubernetes-models/istio model registers, read from its source. */
function istioSchema(modulePath) {
  const source = readFileSync(require.resolve(modulePath), "utf8");
  const start = source.indexOf("const schema = ");
  const end = source.indexOf("\n};\n", start);
  if (start < 0 || end < 0) throw new Error(`no schema literal in ${modulePath}`);
  return JSON.parse(source.slice(start + "const schema = ".length, end + 2));
}

/** Fields of `data` that `schema` does not declare, as paths. */
function unknownFields(schema, data, path, out) {
  if (!schema || data === null || typeof data !== "object") return out;
  if (schema["x-kubernetes-preserve-unknown-fields"] || schema.$ref) return out;
  if (Array.isArray(data)) {
    data.forEach((x, i) => unknownFields(schema.items, x, `${path}[${i}]`, out));
    return out;
  }
  const props = { ...(schema.properties ?? {}) };
  for (const branch of [...(schema.allOf ?? []), ...(schema.oneOf ?? []), ...(schema.anyOf ?? [])]) {
    Object.assign(props, branch.properties ?? {});
  }
  const extra = schema.additionalProperties;
  for (const [key, value] of Object.entries(data)) {
    if (Object.hasOwn(props, key)) {
      unknownFields(props[key], value, `${path}.${key}`, out);
    } else if (extra && typeof extra === "object") {
      unknownFields(extra, value, `${path}.${key}`, out);
    } else if (extra === false || (extra === undefined && Object.keys(props).length > 0)) {
      out.push(`${path}.${key}: unknown field`);
    }
  }
  return out;
}

const ISTIO = {
  "security.istio.io/v1/AuthorizationPolicy": {
    model: AuthorizationPolicy,
    schema: istioSchema("@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy"),
  },
  "networking.istio.io/v1/VirtualService": {
    model: VirtualService,
    schema: istioSchema("@kubernetes-models/istio/networking.istio.io/v1beta1/VirtualService"),
    as: "networking.istio.io/v1beta1",
  },
  "security.istio.io/v1/PeerAuthentication": {
    model: PeerAuthentication,
    schema: istioSchema("@kubernetes-models/istio/security.istio.io/v1beta1/PeerAuthentication"),
    as: "security.istio.io/v1beta1",
  },
};

const PROMETHEUS_OPERATOR = {
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};

// istio.mesh.v1alpha1.MeshConfig.ExtensionProvider with its envoyExtAuthzGrpc member, by
// JSON name and type ("duration" is protobuf JSON: decimal seconds with an `s`).
const GRPC_PROVIDER = {
  name: "string",
  envoyExtAuthzGrpc: {
    service: "string",
    port: "port",
    timeout: "duration",
    failOpen: "boolean",
    statusOnError: "string",
    includeRequestBodyInCheck: {
      maxRequestBytes: "uint32",
      allowPartialMessage: "boolean",
      packAsBytes: "boolean",
    },
  },
};

function checkShape(spec, data, path, out) {
  if (typeof spec === "object") {
    if (!data || typeof data !== "object" || Array.isArray(data)) {
      out.push(`${path}: must be an object`);
      return out;
    }
    for (const [key, value] of Object.entries(data)) {
      if (!Object.hasOwn(spec, key)) out.push(`${path}.${key}: unknown field`);
      else checkShape(spec[key], value, `${path}.${key}`, out);
    }
    return out;
  }
  const ok = {
    string: (v) => typeof v === "string" && v.length > 0,
    boolean: (v) => typeof v === "boolean",
    port: (v) => Number.isInteger(v) && v > 0 && v < 65536,
    uint32: (v) => Number.isInteger(v) && v >= 0 && v < 2 ** 32,
    duration: (v) => typeof v === "string" && /^\d+(\.\d{1,9})?s$/.test(v),
  }[spec];
  if (!ok(data)) out.push(`${path}: ${JSON.stringify(data)} is not a ${spec}`);
  return out;
}

function checkMeshConfig(doc) {
  const problems = [];
  if (Object.keys(doc).join() !== "meshConfig") problems.push("top level: only meshConfig");
  const mc = doc.meshConfig ?? {};
  if (Object.keys(mc).join() !== "extensionProviders") {
    problems.push("meshConfig: only extensionProviders");
  }
  const providers = mc.extensionProviders;
  if (!Array.isArray(providers) || providers.length === 0) {
    problems.push("meshConfig.extensionProviders: a non-empty list");
    return problems;
  }
  providers.forEach((p, i) => {
    const at = `meshConfig.extensionProviders[${i}]`;
    checkShape(GRPC_PROVIDER, p, at, problems);
    for (const required of ["name", "envoyExtAuthzGrpc"]) {
      if (p?.[required] === undefined) problems.push(`${at}.${required}: required`);
    }
    for (const required of ["service", "port"]) {
      if (p?.envoyExtAuthzGrpc?.[required] === undefined) {
        problems.push(`${at}.envoyExtAuthzGrpc.${required}: required`);
      }
    }
  });
  return problems;
}

/** Problems with one document, or [] when it is valid; `null` when its kind is unknown here. */
function check(doc) {
  if (doc && typeof doc === "object" && "meshConfig" in doc) return checkMeshConfig(doc);
  const key = `${doc?.apiVersion}/${doc?.kind}`;
  const problems = [];
  const run = (f) => {
    try {
      f();
    } catch (e) {
      problems.push(e.message);
    }
  };
  if (ISTIO[key]) {
    const { model, schema, as } = ISTIO[key];
    run(() => new model({ ...doc, ...(as ? { apiVersion: as } : {}) }).validate());
    unknownFields(schema, doc, "", problems);
    return problems;
  }
  if (PROMETHEUS_OPERATOR[key]) {
    run(() => new PROMETHEUS_OPERATOR[key](doc).validate());
    return problems;
  }
  return null;
}

function selfTest() {
  const ap = {
    apiVersion: "security.istio.io/v1",
    kind: "AuthorizationPolicy",
    metadata: { name: "p", namespace: "n" },
    spec: {
      selector: { matchLabels: { app: "a" } },
      action: "CUSTOM",
      provider: { name: "mcp-authz" },
      rules: [{ to: [{ operation: { notPaths: ["/.well-known/oauth-protected-resource"] } }] }],
    },
  };
  const vs = {
    apiVersion: "networking.istio.io/v1",
    kind: "VirtualService",
    metadata: { name: "v", namespace: "n" },
    spec: {
      hosts: ["mcp.example.com"],
      http: [
        {
          name: "prm",
          match: [{ uri: { exact: "/.well-known/oauth-protected-resource" } }],
          directResponse: { status: 200, body: { string: "{}" } },
          headers: { response: { set: { "content-type": "application/json" } } },
        },
      ],
    },
  };
  const mesh = {
    meshConfig: {
      extensionProviders: [
        {
          name: "mcp-authz",
          envoyExtAuthzGrpc: {
            service: "mcp-authz.mcp-authz.svc.cluster.local",
            port: 9191,
            timeout: "0.5s",
            failOpen: false,
            statusOnError: "503",
            includeRequestBodyInCheck: { maxRequestBytes: 65536, allowPartialMessage: true, packAsBytes: true },
          },
        },
      ],
    },
  };
  const pa = {
    apiVersion: "security.istio.io/v1",
    kind: "PeerAuthentication",
    metadata: { name: "p", namespace: "n" },
    spec: { selector: { matchLabels: { app: "a" } }, mtls: { mode: "STRICT" } },
  };
  const sm = {
    apiVersion: "monitoring.coreos.com/v1",
    kind: "ServiceMonitor",
    metadata: { name: "s" },
    spec: { selector: {}, endpoints: [{ port: "http-metrics" }] },
  };
  const clone = (x, f) => {
    const c = structuredClone(x);
    f(c);
    return c;
  };
  const valid = [ap, vs, pa, mesh, sm];
  const broken = {
    "AuthorizationPolicy notPath (misspelt)": clone(ap, (d) => {
      d.spec.rules[0].to[0].operation = { notPath: ["/x"] };
    }),
    "AuthorizationPolicy action CUSTOMX": clone(ap, (d) => {
      d.spec.action = "CUSTOMX";
    }),
    "AuthorizationPolicy spec.provider.nme": clone(ap, (d) => {
      d.spec.provider = { nme: "mcp-authz" };
    }),
    "VirtualService directResponses": clone(vs, (d) => {
      d.spec.http[0].directResponses = d.spec.http[0].directResponse;
      delete d.spec.http[0].directResponse;
    }),
    "VirtualService headers.response.sett": clone(vs, (d) => {
      d.spec.http[0].headers.response = { sett: { a: "b" } };
    }),
    "VirtualService status as a string": clone(vs, (d) => {
      d.spec.http[0].directResponse.status = "200";
    }),
    "PeerAuthentication mtls.mode STRICTER": clone(pa, (d) => {
      d.spec.mtls.mode = "STRICTER";
    }),
    "PeerAuthentication spec.mtl": clone(pa, (d) => {
      d.spec.mtl = d.spec.mtls;
      delete d.spec.mtls;
    }),
    "meshConfig packAsByte": clone(mesh, (d) => {
      d.meshConfig.extensionProviders[0].envoyExtAuthzGrpc.includeRequestBodyInCheck.packAsByte = true;
    }),
    "meshConfig timeout 500ms": clone(mesh, (d) => {
      d.meshConfig.extensionProviders[0].envoyExtAuthzGrpc.timeout = "500ms";
    }),
    "meshConfig without port": clone(mesh, (d) => {
      delete d.meshConfig.extensionProviders[0].envoyExtAuthzGrpc.port;
    }),
    "ServiceMonitor without endpoints": clone(sm, (d) => {
      delete d.spec.endpoints;
    }),
  };
  let failures = 0;
  for (const doc of valid) {
    const p = check(doc);
    if (p === null || p.length > 0) {
      console.error(`self-test: a valid ${doc.kind ?? "meshConfig"} was refused: ${p}`);
      failures++;
    }
  }
  for (const [name, doc] of Object.entries(broken)) {
    const p = check(doc);
    if (p === null || p.length === 0) {
      console.error(`self-test: accepted a broken document: ${name}`);
      failures++;
    }
  }
  if (failures > 0) process.exit(1);
  console.log(`self-test: ${valid.length} valid accepted, ${Object.keys(broken).length} broken refused`);
}

function main(files) {
  if (files.length === 0) {
    console.error("usage: validate.mjs FILE... | --self-test");
    process.exit(2);
  }
  let documents = 0;
  let failed = false;
  for (const file of files) {
    yaml.loadAll(readFileSync(file, "utf8"), (doc) => {
      if (doc === null || doc === undefined) return;
      documents++;
      const what = `${file}: ${doc.kind ?? "meshConfig"} ${doc.metadata?.name ?? ""}`.trim();
      const problems = check(doc);
      if (problems === null) {
        console.error(`${what}: no validator for ${doc.apiVersion}/${doc.kind}`);
        failed = true;
      } else if (problems.length > 0) {
        console.error(`${what}:\n  ${problems.join("\n  ")}`);
        failed = true;
      } else {
        console.log(`${what}: valid`);
      }
    });
  }
  if (failed) process.exit(1);
  console.log(`validated ${documents} documents`);
}

const args = process.argv.slice(2);
if (args[0] === "--self-test") selfTest();
else main(args);
