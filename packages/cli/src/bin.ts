import { run } from './main.js';

// A reader that went away (`meridian log | head -1`, `lag --watch | head`) has
// all it wanted: stop quietly, as other tools do, instead of dying on EPIPE
// with a stack trace.
// (with the exit code the command set, though: `meridian check --json | head` on a damaged node must
// still fail, and the code is set once the output is written, before the pipe's error comes back)
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  process.stderr.write(`meridian: cannot write to stdout (${e.message}); nothing more is written\n`);
  process.exit(1);
});

process.exitCode = await run(process.argv);
