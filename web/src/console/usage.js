// The console's usage page (being built).
export async function render(ctx) {
  ctx.root.textContent = "";
}
