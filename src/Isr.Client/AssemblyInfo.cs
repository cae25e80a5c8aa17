namespace Isr.Client;
