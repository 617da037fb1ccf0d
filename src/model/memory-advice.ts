/**
 * What to suggest when the memory that no batch size changes (weights, gradients, optimizer
 * state) is over a limit: training fewer tensors, in the words of the command line or of a run
 * config, only where the method and setting allow fewer; nothing when only frozen weights are
 * left (operators, LoRA) or when the frozen weights alone are over the limit.
 */
export interface TrainingChoice {
  readonly method: string;
  readonly setting: string | null | undefined;
}

export function fewerTensorsAdvice(training: TrainingChoice | undefined, form: 'cli' | 'config'): string | undefined {
  if (training === undefined) return undefined;
  const cli = form === 'cli';
  const apex = (settings: string) => (cli ? `--method apex --setting ${settings}` : `method: apex with setting: ${settings}`);
  const setting = (settings: string) => (cli ? `--setting ${settings}` : `setting: ${settings}`);
  const lora = cli ? '--method lora' : 'method: lora';
  if (training.method === 'vanilla') return `train fewer tensors (${apex('structured or operators')}, or ${lora})`;
  if (training.method !== 'apex') return undefined;
  if (training.setting === 'full' || training.setting == null) return `train fewer tensors (${setting('structured or operators')}, or ${lora})`;
  if (training.setting === 'structured') return `train fewer tensors (${setting('operators')}, or ${lora})`;
  return undefined;
}
