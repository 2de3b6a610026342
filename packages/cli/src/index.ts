export { run, buildProgram } from './main.js';
export { parseAssignments } from './assignments.js';
