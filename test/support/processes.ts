import { execFileSync } from 'node:child_process';

export { isAlive } from '../../apps/launcher/src/service-process';

export interface ProcessEntry {
  pid: number;
  command: string;
}

/** The running children of `parentPid` with their command lines (ps, on Linux and macOS). */
export function childrenOf(parentPid: number): ProcessEntry[] {
  const table = execFileSync('ps', ['-A', '-o', 'pid=,ppid=,args='], { encoding: 'utf8' });
  const children: ProcessEntry[] = [];
  for (const line of table.split('\n')) {
    const match = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line);
    if (match && Number(match[2]) === parentPid) children.push({ pid: Number(match[1]), command: match[3] ?? '' });
  }
  return children;
}

/** Every running descendant of `parentPid` (children, their children, …). */
export function descendantsOf(parentPid: number): ProcessEntry[] {
  const children = childrenOf(parentPid);
  return [...children, ...children.flatMap((child) => descendantsOf(child.pid))];
}
