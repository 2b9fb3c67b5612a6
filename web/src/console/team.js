// The console's team page (being built).
export async function render(ctx) {
  ctx.root.textContent = "";
}
