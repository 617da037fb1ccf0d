import { referenceSuite } from './reference-suite.js';

referenceSuite('wasm');
