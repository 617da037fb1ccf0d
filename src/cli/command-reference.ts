/**
 * Renders the Markdown command reference (commands, arguments, flags with defaults) from the
 * oclif command classes, for README.md. Reads the compiled commands through oclif's loader so
 * it sees exactly what the CLI sees.
 */
import { Config } from '@oclif/core';

interface FlagLike {
  name: string;
  char?: string;
  type: 'boolean' | 'option';
  description?: string;
  default?: unknown;
  options?: readonly string[];
  multiple?: boolean;
  required?: boolean;
  hidden?: boolean;
  allowNo?: boolean;
}

function flagUsage(f: FlagLike): string {
  const short = f.char ? `-${f.char}, ` : '';
  const neg = f.type === 'boolean' && f.allowNo ? `--[no-]${f.name}` : `--${f.name}`;
  const value = f.type === 'option' ? (f.options ? ` <${f.options.join('|')}>` : ' <value>') : '';
  return `${short}${neg}${value}${f.multiple ? ' …' : ''}`;
}

function oneLine(text: string | undefined): string {
  return (text ?? '').replace(/\s+/g, ' ').replace(/\|/g, '\\|').trim();
}

export async function renderCommandReference(root: string): Promise<string> {
  const config = await Config.load({ root });
  const commands = [...config.commands].filter((c) => !c.hidden).sort((x, y) => x.id.localeCompare(y.id));
  const out: string[] = [];
  for (const c of commands) {
    const args = Object.values(c.args ?? {}).map((a) => (a.required ? `<${a.name}>` : `[${a.name}]`));
    out.push(`### \`apex ${[c.id.replace(/:/g, ' '), ...args].join(' ')}\``, '');
    if (c.description) out.push(oneLine(c.description), '');
    const argRows = Object.values(c.args ?? {}).map((a) => `| \`${a.name}\` | ${oneLine(a.description)} |`);
    if (argRows.length > 0) out.push('| argument | meaning |', '|---|---|', ...argRows, '');
    const flags = Object.values(c.flags ?? {}) as unknown as FlagLike[];
    const visible = flags.filter((f) => !f.hidden).sort((x, y) => x.name.localeCompare(y.name));
    if (visible.length > 0) {
      out.push('| flag | meaning | default |', '|---|---|---|');
      for (const f of visible) {
        const def = f.default === undefined || typeof f.default === 'function' || f.default === false ? '' : `\`${JSON.stringify(f.default)}\``;
        out.push(`| \`${flagUsage(f).replace(/\|/g, '\\|')}\` | ${oneLine(f.description)}${f.required ? ' (required)' : ''} | ${def} |`);
      }
      out.push('');
    }
  }
  return out.join('\n').trimEnd();
}
