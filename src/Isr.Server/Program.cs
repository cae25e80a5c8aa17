using Isr.Server;
using Isr.Server.Admin;

// `isr-server COMMAND …` is the administration CLI (AdminCli); with only host arguments (--urls=…, as WebApplicationFactory
// passes) this is the web application itself.
if (AdminCli.Handles(args)) return await AdminCli.RunAsync(args);

var builder = WebApplication.CreateBuilder(args);
builder.AddIsrServer();
var app = builder.Build();
app.MapIsrApi();
await app.RunAsync();
return 0;

public partial class Program;
