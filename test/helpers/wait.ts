export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 100 ms for up to `ms`; resolves to its last answer. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 6000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) {
    if (await cond()) return true;
  }
  return cond();
}
