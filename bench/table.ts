/** One line of a benchmark table: `ok` is unset for reference figures that have no target. */
export interface Row {
  metric: string;
  value: string;
  target: string;
  ok?: boolean;
}

/** A titled markdown table, or nothing when there are no rows (a table left out by BENCH_ONLY). */
export function formatTable(title: string, rows: Row[]): string {
  if (rows.length === 0) return '';
  const lines = [`${title}`, '', '| metric | measured | target | |', '|---|---|---|---|'];
  for (const row of rows) lines.push(`| ${row.metric} | ${row.value} | ${row.target} | ${row.ok === undefined ? '' : row.ok ? 'ok' : 'MISSED'} |`);
  return `\n${lines.join('\n')}\n`;
}
