// Runs one case of test/train/trajectory-driver.ts on the cpu backend and writes, as JSON, what
// scripts/pytorch/train_reference.py needs (the data, the micro-batches, the selected units, the
// operators' and adapters' initial tensors, the options; per stage) and what apex computed (per
// stage: each step's loss, learning rate and gradient norm; every trainable tensor after the last
// step; the fused model a later stage starts from).
//
//   npx tsx scripts/pytorch/export-apex-run.ts <case|all> <out-folder>   (all: the test's cases; INVESTIGATION_CASES by name)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { INVESTIGATION_CASES, inputsDigest, runTrajectory, TRAJECTORY_CASES, TRAJECTORY_MODEL, type Tensor } from '../../test/train/trajectory-driver.js';

const [which, out] = process.argv.slice(2);
if (!which || !out) throw new Error('usage: export-apex-run.ts <case|all> <out-folder>');
mkdirSync(out, { recursive: true });
const tensors = (m: Map<string, Tensor>) => Object.fromEntries([...m].map(([k, t]) => [k, { shape: t.shape, values: Array.from(t.values) }]));
for (const c of [...TRAJECTORY_CASES, ...INVESTIGATION_CASES].filter((x) => (which === 'all' && TRAJECTORY_CASES.includes(x)) || x.name === which)) {
  const started = performance.now();
  const r = await runTrajectory(c);
  try {
    const o = c.options as Record<string, unknown>;
    const json = {
      case: c.name,
      model: c.model ?? TRAJECTORY_MODEL,
      inputs_sha256: inputsDigest(r),
      options: {
        method: o.method, setting: o.setting ?? null, lr: o.lr, beta1: o.beta1 ?? 0.9, beta2: o.beta2 ?? 0.95, weight_decay: o.weightDecay ?? 0, grad_clip: o.gradClip ?? 1,
        batch_size: o.batchSize, grad_accum: o.gradAccum, steps: o.steps, total_stages: o.totalStages ?? 1, lora_rank: o.loraRank ?? null, lora_alpha: o.loraAlpha ?? null,
        train_embeddings: o.trainEmbeddings ?? (o.setting === 'structured'), ratio: o.ratio ?? 0.375, tuned_attn_ratio: o.tunedAttnRatio ?? 0.5625, tuned_ffn_ratio: o.tunedFfnRatio ?? 0.465,
      },
      sequences: r.data.sequences.map((s) => Array.from(s)),
      loss_masks: r.data.lossMasks?.map((m) => Array.from(m)) ?? null,
      calibration: r.calibration,
      stages: r.stages.map((st) => ({
        stage: st.stage,
        batches: st.batches,
        selection: st.selection,
        initial: tensors(st.initial),
        apex: { losses: st.losses, lrs: st.lrs, grad_norms: st.gradNorms, lr_plan: st.lrPlan, final: tensors(st.final), ...(st.fused ? { fused: tensors(st.fused) } : {}) },
      })),
    };
    writeFileSync(join(out, `${c.name}.json`), JSON.stringify(json));
    for (const st of r.stages) console.log(`${c.name} stage ${st.stage}: losses ${st.losses.map((l) => l.toFixed(4)).join(' ')}; lrs ${st.lrs.map((l) => l.toExponential(3)).join(' ')}; grad norms ${st.gradNorms.map((l) => l.toFixed(3)).join(' ')}`);
    console.log(`${c.name}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    r.cleanup();
  }
}
