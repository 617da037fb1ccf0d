/**
 * The model card (`README.md`) of a checkpoint `apex expand` writes: Hugging Face front matter
 * (base model, tags) and a short account of what was fused into which model, the APEX
 * settings recorded in the operator file, the units selected per layer, and how to reproduce it.
 */
import type { OperatorFileMeta } from '../ops/operator-file.js';
import type { ExpandPlan } from './expand-plan.js';

export interface ModelCardInput {
  /** The model the run started from, when known. */
  readonly baseModel?: string;
  /** Its Hub repository id (front matter `base_model`), when it came from the Hub. */
  readonly baseModelHubId?: string;
  /** The checkpoint this one was fused from (the base model, or the previous stage's output). */
  readonly inputModel: string;
  readonly stage?: number;
  readonly operatorsMeta?: OperatorFileMeta;
  readonly operatorsFile?: string;
  readonly updatesFile?: string;
  /** Names of the directly trained tensors (from the updates file). */
  readonly updatedTensors: number;
  readonly plan: ExpandPlan;
  readonly outDtype?: string;
  readonly apexVersion: string;
  /** The command line that made it (redacted by the caller). */
  readonly commandLine: string;
}

/** A value for YAML front matter: plain when safe, JSON-quoted otherwise. */
function yamlScalar(s: string): string {
  return /^[A-Za-z0-9_./@-]+$/.test(s) && !/^[-.]/.test(s) ? s : JSON.stringify(s);
}

function list(units: readonly number[]): string {
  return units.length <= 12 ? units.join(', ') : `${units.slice(0, 12).join(', ')}, … (${units.length})`;
}

export function renderModelCard(c: ModelCardInput): string {
  const lines: string[] = ['---'];
  if (c.baseModelHubId !== undefined) lines.push(`base_model: ${yamlScalar(c.baseModelHubId)}`);
  lines.push('library_name: transformers', 'tags:', '- apex', '- advantageous-parameter-expansion', '---', '');
  const title = c.stage !== undefined ? `APEX stage ${c.stage} checkpoint` : 'APEX-expanded checkpoint';
  lines.push(`# ${title}`, '');
  lines.push(
    'An ordinary Hugging Face LLaMA-family checkpoint: the APEX expansion operators (Gu et al., ' +
      '"Advantageous Parameter Expansion Training Makes Better Large Language Models", arXiv 2505.24241) ' +
      'trained in this stage have been fused into the plain weights, so the architecture, tensor names and ' +
      'shapes are those of the input model. Load it like the base model.',
    '',
  );
  lines.push('| | |', '|---|---|');
  if (c.baseModel !== undefined) lines.push(`| base model | \`${c.baseModel}\` |`);
  if (c.inputModel !== c.baseModel) lines.push(`| fused from | \`${c.inputModel}\` |`);
  if (c.stage !== undefined) lines.push(`| stage | ${c.stage} |`);
  const m = c.operatorsMeta;
  if (m) {
    lines.push(`| setting | ${m.setting} |`, `| selection ratio | ${m.ratio} |`, `| seed | ${m.seed} |`, `| operators made by | apex ${m.apexVersion} |`);
  } else {
    lines.push('| operators | none (directly trained weights only) |');
  }
  lines.push(`| directly trained tensors | ${c.updatedTensors} |`);
  lines.push(`| tensors changed / copied byte for byte | ${c.plan.changed} / ${c.plan.copied} |`);
  if (c.outDtype !== undefined) lines.push(`| stored dtype | ${c.outDtype} |`);
  lines.push(`| made by | apex ${c.apexVersion} |`, '');

  const withOps = c.plan.layers.filter((l) => l.heads || l.channels);
  if (withOps.length > 0) {
    lines.push('## Expanded units', '', 'P: advantageous units (the source of the mix), N: disadvantageous units (re-parameterised). Heads are KV groups under grouped-query attention.', '');
    lines.push('| layer | head P | head N | channel P | channel N |', '|---|---|---|---|---|');
    for (const l of withOps) {
      lines.push(`| ${l.layer} | ${l.heads ? list(l.heads.P) : '–'} | ${l.heads ? list(l.heads.N) : '–'} | ${l.channels ? list(l.channels.P) : '–'} | ${l.channels ? list(l.channels.N) : '–'} |`);
    }
    lines.push('');
  }
  lines.push('## How it was made', '');
  lines.push(
    'Trained tensors (when any) replaced the input\'s first; then, per layer, the operators were fused in ' +
      'float32 (output side: rows of v_proj, gate_proj, up_proj; input side: columns of o_proj, down_proj) and ' +
      'each changed tensor was rounded once to its stored dtype (round to nearest even). Every other tensor ' +
      'was copied byte for byte and checked by sha256. `apex_run.json` records the inputs, outputs and their hashes.',
    '',
    '```',
    c.commandLine,
    '```',
    '',
  );
  if (c.operatorsFile !== undefined) lines.push(`Operators: \`${c.operatorsFile}\``);
  if (c.updatesFile !== undefined) lines.push(`Trained tensors: \`${c.updatesFile}\``);
  lines.push('');
  return lines.join('\n');
}
