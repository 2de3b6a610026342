// Preloaded into a node under test (`node --import`): each SIGUSR2 sets the
// process's wall clock (Date.now, which timers of the code under test might
// read) back one hour, as an NTP step or a resumed VM may. Plain JavaScript:
// the node runs without the test runner's TypeScript loader.
const realNow = Date.now;
let offset = 0;
Date.now = () => realNow() + offset;
process.on('SIGUSR2', () => {
  offset -= 3_600_000;
});
