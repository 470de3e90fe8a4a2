/**
 * The operator assets in deploy/ (docs/operations.md): the manifests parse
 * and say what the stateless-lb pod needs (uid 10002, NET_ADMIN added and
 * everything else dropped, privilege escalation left on for the file
 * capabilities, /dev/shm in memory, the metrics port the probes and the
 * PodMonitor use); the PrometheusRule carries exactly the rules promtool
 * tests, each alert with a runbook entry and a test; the dashboard is what its
 * generator writes, and every PromQL expression in it parses (promtool) and
 * returns series from a real recorded scrape (a Prometheus over
 * test/fixtures/metrics/recorded.om.gz, in a network namespace). promtool
 * suites skip with one line where promtool is not installed.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promtool, promtoolUnavailable } from '../helpers/promtool';
import { describeUnless, netnsUnavailable } from '../helpers/skip';

// js-yaml (a devDependency; README "Dependencies"): the manifests are YAML as Kubernetes users write it.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const yaml = require('js-yaml') as { safeLoadAll(text: string): unknown[] };

const ROOT = path.join(__dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
const RECORDED = path.join(ROOT, 'test', 'fixtures', 'metrics', 'recorded.om.gz');

/* eslint-disable @typescript-eslint/no-explicit-any */
type Doc = any;

function loadAll(file: string): Doc[] {
  return yaml.safeLoadAll(fs.readFileSync(path.join(DEPLOY, file), 'utf8')).filter((d) => d !== null && d !== undefined);
}

const deployment = (): Doc => loadAll('stateless-lb.yaml').find((d) => d.kind === 'Deployment');
const podMonitor = (): Doc => loadAll('podmonitor.yaml').find((d) => d.kind === 'PodMonitor');
const rules = (): Doc => loadAll('prometheus/nfqlb-rules.yaml')[0];
const alerts = (): Doc[] => rules().groups.flatMap((g: Doc) => g.rules.filter((r: Doc) => r.alert !== undefined));

describe('manifests', () => {
  it('every document has apiVersion, kind and a name, and no key is duplicated', () => {
    for (const file of ['stateless-lb.yaml', 'podmonitor.yaml', 'prometheusrule.yaml']) {
      const docs = loadAll(file); // js-yaml throws on a duplicated key
      expect(docs.length).toBeGreaterThan(0);
      for (const d of docs) {
        expect(typeof d.apiVersion).toBe('string');
        expect(typeof d.kind).toBe('string');
        expect(d.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      }
    }
  });

  it('the stateless-lb container: uid 10002, NET_ADMIN only, escalation allowed, /dev/shm in memory, metrics port', () => {
    const d = deployment();
    expect(d.apiVersion).toBe('apps/v1');
    const spec = d.spec.template.spec;
    // The selector selects the template.
    for (const [k, v] of Object.entries(d.spec.selector.matchLabels)) expect(d.spec.template.metadata.labels[k]).toBe(v);
    const c = spec.containers.find((x: Doc) => x.name === 'stateless-lb');
    const sc = c.securityContext;
    expect(sc).toMatchObject({ runAsNonRoot: true, runAsUser: 10002, runAsGroup: 10002, readOnlyRootFilesystem: true });
    // no_new_privs would disable the file capabilities NET_ADMIN comes through.
    expect(sc.allowPrivilegeEscalation).not.toBe(false);
    expect(sc.privileged).not.toBe(true);
    expect(sc.capabilities.drop).toEqual(['ALL']);
    expect(sc.capabilities.add).toEqual(['NET_ADMIN']);
    const shm = c.volumeMounts.find((m: Doc) => m.mountPath === '/dev/shm');
    const vol = spec.volumes.find((v: Doc) => v.name === shm.name);
    expect(vol.emptyDir.medium).toBe('Memory');
    const port = c.ports.find((p: Doc) => p.containerPort === 9657);
    expect(port.name).toBe('nfqlb-metrics');
    expect(port.name.length).toBeLessThanOrEqual(15); // IANA_SVC_NAME
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'nfqlb-metrics' });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'nfqlb-metrics' });
    // Every mount has its volume.
    for (const m of c.volumeMounts) expect(spec.volumes.map((v: Doc) => v.name)).toContain(m.name);
  });

  it('the PodMonitor selects the pod, scrapes its metrics port and names the job the rules use', () => {
    const pm = podMonitor();
    const pod = deployment().spec.template;
    expect(pm.apiVersion).toBe('monitoring.coreos.com/v1');
    for (const [k, v] of Object.entries(pm.spec.selector.matchLabels)) expect(pod.metadata.labels[k]).toBe(v);
    expect(pm.spec.namespaceSelector.matchNames).toContain(deployment().metadata.namespace);
    const ep = pm.spec.podMetricsEndpoints[0];
    expect(pod.spec.containers.flatMap((c: Doc) => c.ports.map((p: Doc) => p.name))).toContain(ep.port);
    expect(ep.path).toBe('/metrics');
    expect(ep.relabelings).toContainEqual({ action: 'replace', targetLabel: 'job', replacement: 'nfqlb' });
  });

  it('the PrometheusRule is what scripts/gen-prometheusrule.js writes, with the very groups promtool tests', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'gen-prometheusrule.js'), '--check'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const pr = loadAll('prometheusrule.yaml')[0];
    expect(pr.kind).toBe('PrometheusRule');
    expect(pr.spec.groups).toEqual(rules().groups);
  });

  it('every alert has a severity, a summary and a runbook entry in docs/runbook.md, and a promtool test', () => {
    const runbook = fs.readFileSync(path.join(ROOT, 'docs', 'runbook.md'), 'utf8');
    const tests = yaml.safeLoadAll(fs.readFileSync(path.join(DEPLOY, 'prometheus', 'nfqlb-rules.test.yaml'), 'utf8'))[0] as Doc;
    const tested = new Set(tests.tests.flatMap((t: Doc) => t.alert_rule_test.filter((a: Doc) => a.exp_alerts.length > 0).map((a: Doc) => a.alertname)));
    const all = alerts();
    expect(all.length).toBeGreaterThanOrEqual(10);
    for (const a of all) {
      expect(['critical', 'warning']).toContain(a.labels.severity);
      expect(a.annotations.summary).toBeTruthy();
      const anchor = `docs/runbook.md#${a.alert.toLowerCase()}`;
      expect(a.annotations.runbook_url).toBe(anchor);
      expect(runbook).toMatch(new RegExp(`^## ${a.alert}$`, 'm'));
      expect(tested).toContain(a.alert);
    }
  });
});

describeUnless(promtoolUnavailable())('promtool on the rules', () => {
  it('check rules', () => {
    const r = promtool(['check', 'rules', path.join(DEPLOY, 'prometheus', 'nfqlb-rules.yaml')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('test rules: each alert fires on the fault it names and not before', () => {
    const r = spawnSync('promtool', ['test', 'rules', 'nfqlb-rules.test.yaml'], { cwd: path.join(DEPLOY, 'prometheus'), encoding: 'utf8' });
    expect(r.stdout + r.stderr).toMatch(/SUCCESS/);
    expect(r.status).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// The dashboard

// eslint-disable-next-line @typescript-eslint/no-var-requires
const recorded = require(path.join(ROOT, 'scripts', 'recorded-prometheus.js')) as {
  startRecordedPrometheus(file: string): Promise<{ start: number; end: number; queryRange(exprs: string[], step?: number): { expr: string; status: string; error?: string; series: { metric: Record<string, string>; values: [number, string][] }[] }[]; close(): Promise<void> }>;
  concreteExpr(expr: string): string;
};

const dashboardText = (): string => fs.readFileSync(path.join(DEPLOY, 'grafana', 'nfqlb-dashboard.json'), 'utf8');
function expressions(): { panel: string; expr: string }[] {
  const d = JSON.parse(dashboardText()) as Doc;
  return d.panels.filter((p: Doc) => p.type !== 'row').flatMap((p: Doc) => p.targets.map((t: Doc) => ({ panel: p.title, expr: t.expr as string })));
}

describe('dashboard', () => {
  it('is what scripts/gen-dashboard.js writes: unique ids, no overlapping panels, the panels the issue lists', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'gen-dashboard.js'), '--check'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const d = JSON.parse(dashboardText()) as Doc;
    const ids = d.panels.map((p: Doc) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of d.panels) {
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`)).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
    const metrics = expressions().map((e) => e.expr).join('\n');
    for (const m of ['nfqlb_target_packets_total', 'nfqlb_decisions_total', 'nfqlb_table_no_target_total', 'nfqlb_queue_waiting', 'nfqlb_queue_dropped_total',
      'nfqlb_batch_size_bucket', 'nfqlb_control_requests_total', 'nfqlb_flows', 'nfqlb_fragment_inserts_total', 'process_cpu_seconds_total', 'process_resident_memory_bytes']) {
      expect(metrics).toContain(m);
    }
    for (const e of expressions()) expect(e.expr).toContain('instance=~"$instance"');
  });

  describeUnless(promtoolUnavailable())('with promtool', () => {
    it('every expression parses (as a recording rule for promtool check rules)', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlb-dash-'));
      try {
        const file = path.join(dir, 'exprs.yaml');
        const groups = { groups: [{ name: 'dashboard', rules: expressions().map((e, i) => ({ record: `dashboard:expr_${i}`, expr: recorded.concreteExpr(e.expr) })) }] };
        fs.writeFileSync(file, JSON.stringify(groups)); // JSON is YAML
        const r = promtool(['check', 'rules', file]);
        expect(r.stdout).toContain(`SUCCESS: ${expressions().length} rules found`);
        expect(r.status).toBe(0);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    describeUnless(netnsUnavailable())('against the recorded scrape', () => {
      jest.setTimeout(180_000);
      it('every expression returns series with values from the recording', async () => {
        const prom = await recorded.startRecordedPrometheus(RECORDED);
        try {
          const results = prom.queryRange(expressions().map((e) => recorded.concreteExpr(e.expr)));
          for (const r of results) {
            expect({ expr: r.expr, status: r.status, error: r.error }).toEqual({ expr: r.expr, status: 'success', error: undefined });
            expect({ expr: r.expr, series: r.series.length > 0 }).toEqual({ expr: r.expr, series: true });
          }
          // The recording's story is in the data: a table that lost every target counted no_target drops.
          const noTarget = results.find((r) => r.expr.includes('nfqlb_table_no_target_total'))!;
          expect(noTarget.series.some((s) => s.values.some(([, v]) => Number(v) > 0))).toBe(true);
        } finally {
          await prom.close();
        }
      });
    });
  });
});
