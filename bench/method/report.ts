/**
 * Prints the Markdown tables of docs/results.md from the raw per-seed results in
 * bench/method/results/*.json (whatever experiments have been run).
 *
 *   npx tsx bench/method/report.ts
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readResult, RESULTS_DIR, stats, type ArmResult, type ComparisonRow, type ModelDiagnostics, type Stats } from './lib.js';

const cell = (s: Stats, d = 2) => `${s.mean.toFixed(d)} ± ${s.std.toFixed(d)} | ${s.min.toFixed(d)}–${s.max.toFixed(d)}`;
const has = (name: string) => existsSync(join(RESULTS_DIR, `${name}.json`));
const out: string[] = [];

interface CptRow { seed: number; vanilla: ArmResult; apex: ArmResult; tokensToVanillaFinal: number | null; fraction: number | null }
interface Cpt { rows: CptRow[]; diagnostics: { seed: number; base: ModelDiagnostics; vanilla: ModelDiagnostics; apex: ModelDiagnostics }[] }

function armTable(rows: readonly { seed: number; vanilla: ArmResult; arms: Record<string, ArmResult & { fraction: number | null }> }[]): void {
  out.push(
    '| arm | trainable | final ppl, mean ± std | min–max | arm − vanilla (per seed), mean ± std | min–max | wins vs vanilla | reached vanilla final | fraction of vanilla tokens, mean ± std | min–max |',
    '|---|---|---|---|---|---|---|---|---|---|',
  );
  out.push(`| vanilla | 100% | ${cell(stats(rows.map((r) => r.vanilla.final)))} | — | — | — | — | — | — |`);
  for (const name of Object.keys(rows[0]!.arms)) {
    const rs = rows.map((r) => r.arms[name]!);
    const fr = rs.map((r) => r.fraction).filter((f): f is number => f !== null);
    const diff = stats(rows.map((r) => r.arms[name]!.final - r.vanilla.final));
    out.push(
      `| ${name} | ${(100 * rs[0]!.trainableFraction[0]!).toFixed(1)}% | ${cell(stats(rs.map((r) => r.final)))} | ${diff.mean >= 0 ? '+' : ''}${cell(diff, 3)} | ` +
        `${rows.filter((r) => r.arms[name]!.final < r.vanilla.final).length}/${rows.length} | ${fr.length}/${rs.length} | ${fr.length > 0 ? cell(stats(fr), 3) : '— | —'} |`,
    );
  }
  const before = stats(rows.map((r) => r.vanilla.before));
  out.push(`\nn = ${rows.length} seeds (${rows.map((r) => r.seed).join(', ')}); base-model held-out perplexity ${before.mean.toFixed(2)} ± ${before.std.toFixed(2)} (${before.min.toFixed(2)}–${before.max.toFixed(2)}).\n`);
}

if (has('cpt')) {
  const cpt = await readResult<Cpt>('cpt');
  out.push('### 1. Continued pre-training: APEX full vs vanilla\n');
  armTable(cpt.rows.map((r) => ({ seed: r.seed, vanilla: r.vanilla, arms: { 'apex-full': { ...r.apex, fraction: r.fraction } } })));
  out.push('Held-out perplexity versus training tokens (mean over seeds; same evaluation points for both arms):\n');
  const tokens = cpt.rows[0]!.vanilla.curve.map((p) => p.tokens);
  out.push('| tokens | vanilla | APEX full | APEX − vanilla |', '|---|---|---|---|');
  tokens.forEach((t, i) => {
    const v = stats(cpt.rows.map((r) => r.vanilla.curve[i]!.ppl));
    const a = stats(cpt.rows.map((r) => r.apex.curve[i]!.ppl));
    const d = stats(cpt.rows.map((r) => r.apex.curve[i]!.ppl - r.vanilla.curve[i]!.ppl));
    out.push(`| ${t} | ${v.mean.toFixed(2)} ± ${v.std.toFixed(2)} | ${a.mean.toFixed(2)} ± ${a.std.toFixed(2)} | ${d.mean.toFixed(3)} ± ${d.std.toFixed(3)} |`);
  });
  out.push('');
  if (cpt.diagnostics.length > 0) {
    const ds = cpt.diagnostics;
    const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    const modules = Object.keys(ds[0]!.base.erank[0]!);
    out.push('### 5. Effective rank and activation CV\n');
    out.push('Effective rank, averaged over the 4 layers, then mean ± std over seeds (the last two columns: the per-seed difference APEX − vanilla of erank(ΔW)):\n');
    out.push('| module | base W | vanilla W | APEX W | vanilla ΔW | APEX ΔW | APEX − vanilla ΔW, mean ± std | min–max |', '|---|---|---|---|---|---|---|---|');
    for (const m of modules) {
      const per = (f: (d: (typeof ds)[number]) => Record<string, number>[]) => stats(ds.map((d) => mean(f(d).map((l) => l[m]!))));
      const diff = stats(ds.map((d) => mean(d.apex.deltaErank!.map((l) => l[m]!)) - mean(d.vanilla.deltaErank!.map((l) => l[m]!))));
      const ms = (x: Stats) => `${x.mean.toFixed(2)} ± ${x.std.toFixed(2)}`;
      out.push(`| ${m} | ${ms(per((d) => d.base.erank))} | ${ms(per((d) => d.vanilla.erank))} | ${ms(per((d) => d.apex.erank))} | ${ms(per((d) => d.vanilla.deltaErank!))} | ${ms(per((d) => d.apex.deltaErank!))} | ${cell(diff, 3)} |`);
    }
    out.push('\nActivation coefficient of variation std(A)/mean(A) of the unit norms on the seed\'s calibration sequences, averaged over layers:\n');
    out.push('| units | base, mean ± std | min–max | vanilla, mean ± std | min–max | APEX full, mean ± std | min–max |', '|---|---|---|---|---|---|---|');
    for (const [label, key] of [['heads', 'headCv'], ['FFN channels', 'channelCv']] as const) {
      const s = (w: 'base' | 'vanilla' | 'apex') => cell(stats(ds.map((d) => mean(d[w][key]))), 3);
      out.push(`| ${label} | ${s('base')} | ${s('vanilla')} | ${s('apex')} |`);
    }
    out.push(`\nn = ${ds.length} seeds.\n`);
  }
}
for (const [name, title] of [['structured', '3. Structured (52% recipe) vs vanilla'], ['ablations', '4. Ablations (on the structured 52% recipe)'], ['lora-sized', '2. LoRA-sized']] as const) {
  if (!has(name)) continue;
  const r = await readResult<{ rows: ComparisonRow[] }>(name);
  out.push(`### ${title}\n`);
  armTable(r.rows);
  if (name === 'ablations') {
    const ref = 'apex-structured-52';
    out.push(`Per-seed difference from the reference arm (${ref}: rank scoring, 2 stages):\n`);
    out.push('| ablation | final ppl − reference, mean ± std | min–max | lower than reference |', '|---|---|---|---|');
    for (const name of Object.keys(r.rows[0]!.arms).filter((a) => a !== ref)) {
      const d = r.rows.map((row) => row.arms[name]!.final - row.arms[ref]!.final);
      out.push(`| ${name} | ${cell(stats(d), 3)} | ${d.filter((x) => x < 0).length}/${d.length} |`);
    }
    out.push('');
  }
}
console.log(out.join('\n'));
