/**
 * `apex env`: versions, TensorFlow.js backends, CPU/GPU and Hugging Face settings, for bug
 * reports and for checking a machine before a long job. The work is in util/env-info.ts.
 */
import { ApexCommand } from '../cli/base-command.js';
import { collectEnvInfo, type EnvInfo } from '../util/env-info.js';
import { formatBytes } from '../io/byte-size.js';

const GiB = 2 ** 30;

export default class Env extends ApexCommand<EnvInfo> {
  static override description = 'Show versions, TensorFlow.js backends, CPU/GPU found, Hugging Face cache settings and the token cache.';
  static override examples = ['<%= config.bin %> env', '<%= config.bin %> env --json'];

  protected async execute(): Promise<EnvInfo> {
    await this.parse(Env); // rejects unknown flags (exit 2) before any output
    const info = await collectEnvInfo();
    const hf = info.huggingFace;
    this.say(`apex ${info.apex.version} (build ${info.apex.build}), node ${info.node.version}, ${info.node.platform}/${info.node.arch} (${info.node.osRelease})`);
    this.say(`CPU: ${info.cpu.model} x ${info.cpu.count}; memory: ${(info.memory.totalBytes / GiB).toFixed(1)} GiB total, ${(info.memory.freeBytes / GiB).toFixed(1)} GiB free`);
    this.say(`packages: ${Object.entries(info.packages).map(([p, v]) => `${p} ${v ?? '(not installed)'}`).join(', ')}`);
    this.say('backends (in preference order):');
    for (const b of info.backends) this.say(`  ${b.name.padEnd(10)} ${b.available ? 'yes' : 'no '}  ${b.detail}`);
    this.say(`GPU: ${info.gpu.found ? 'found' : 'none'} (${info.gpu.detail})`);
    this.say(`Hugging Face: HF_HOME ${hf.home}; hub cache ${hf.hubCache}`);
    this.say(`  token: ${hf.token.present ? `present (from ${hf.token.source === 'file' ? hf.tokenFile : hf.token.source})` : `none (set HF_TOKEN or write ${hf.tokenFile})`}`);
    this.say(`  endpoint: ${hf.endpoint}${hf.env.HF_ENDPOINT !== null ? ' (HF_ENDPOINT)' : ''}; offline: ${hf.offline ? 'yes (HF_HUB_OFFLINE)' : 'no'}`);
    const tc = info.tokenCache;
    this.say(tc.dir === null ? 'token cache: off (APEX_TOKEN_CACHE)' : `token cache: ${tc.dir} (${tc.entries} file${tc.entries === 1 ? '' : 's'}, ${formatBytes(tc.bytes)}; APEX_CACHE_DIR moves it, APEX_TOKEN_CACHE=0 turns it off)`);
    return info;
  }
}
