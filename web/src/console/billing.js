// The console's billing page (being built).
export async function render(ctx) {
  ctx.root.textContent = "";
}
