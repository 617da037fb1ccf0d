import { referenceSuite } from './reference-suite.js';

referenceSuite('cpu');
