// The console's audit page (being built).
export async function render(ctx) {
  ctx.root.textContent = "";
}
