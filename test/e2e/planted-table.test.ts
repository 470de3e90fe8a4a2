/**
 * A table re-created under its name by another user (held-out review of
 * issue 18). /dev/shm is world-writable (sticky): once an operator runs
 * `nfqlb delete --shm=T` while a flow still uses T, any user in the pod can
 * create T again. The daemon's once-a-second check then reopens T and
 * decides with it — a table whose targets that user chose (all traffic to one
 * target, or a fwmark that routes nowhere). nfqlb 1.2.0 never reopens a
 * table, so a planted one changes nothing there. docs/failure-modes.md promises that
 * whoever can write /dev/shm cannot make the daemon use what they put there
 * (on names that are not files); a regular file owned by someone else is the
 * same attack with the one kind of object that is not refused.
 *
 * The control case (the daemon's own user re-creates the table) shows the
 * test can tell the two apart: that table is taken.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cleanupAll, distribution, ports, registerShm, Testbed, uniqueShmName } from '../../testbed/testbed';
import { describeUnless, netnsUnavailable } from '../helpers/skip';

const describeNs = describeUnless(netnsUnavailable());
jest.setTimeout(180000);

const NFQLB = path.join(__dirname, '../../bin/nfqlb');
const NOBODY = 65534;

function asNobody(args: string[]): void {
  execFileSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, NFQLB, ...args], { stdio: 'pipe' });
}

describeNs('a table re-created by another user after nfqlb delete', () => {
  let tb: Testbed;
  let sport = 20000;
  const targetsReached = (): string[] => {
    const results = tb.connect(tb.vip4, ports(sport, 40));
    sport += 40;
    return [...distribution(results).keys()];
  };

  beforeAll(async () => {
    tb = Testbed.build();
    await tb.startServers();
    await tb.startDaemon(['flowlb', '--queue=0:3', '--hash_mode=0']);
  });

  afterAll(async () => {
    if (tb !== undefined) await tb.destroy();
    await cleanupAll();
  });

  it('is not taken: the daemon goes on with the table it had', async () => {
    const shm = uniqueShmName('plant');
    registerShm(shm);
    tb.initTable(shm);
    tb.setFlow('plant', shm);
    expect(targetsReached().length).toBeGreaterThan(1);

    tb.nfqlbOk(['delete', `--shm=${shm}`]);
    asNobody(['init', `--shm=${shm}`, '--M=997', '--N=10']);
    asNobody(['activate', '--index=0', `--shm=${shm}`, `${tb.targets[0].fwmark}`]); // everything to t1
    expect(fs.statSync(`/dev/shm/${shm}`).uid).toBe(NOBODY);
    await new Promise((r) => setTimeout(r, 4000)); // a few table checks (one a second)

    // 40 connections over the 4 targets of the table the daemon had: all on t1 would be chance 4^-40.
    try {
      expect(targetsReached()).not.toEqual([tb.targets[0].name]);
    } finally {
      tb.nfqlbOk(['flow-delete', '--name=plant']);
      fs.rmSync(`/dev/shm/${shm}`, { force: true });
    }
  });

  it('(control) is taken when the daemon\'s own user re-creates it', async () => {
    const shm = uniqueShmName('plantown');
    registerShm(shm);
    tb.initTable(shm);
    tb.setFlow('plantown', shm);
    expect(targetsReached().length).toBeGreaterThan(1);

    tb.nfqlbOk(['delete', `--shm=${shm}`]);
    tb.initTable(shm, [tb.targets[0]], { M: 997, N: 10 });
    await new Promise((r) => setTimeout(r, 4000));

    expect(targetsReached()).toEqual([tb.targets[0].name]);
  });
});
